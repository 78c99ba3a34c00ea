#!/usr/bin/env python3
"""Writes weights/fixtures/tiny-sd15-single-file.safetensors: the tiny SD 1.5-like fixture model
(weights/fixtures/tiny-sd15) in the original CompVis/LDM single-file layout
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*`), the layout
of `v1-5-pruned-emaonly.safetensors`.

    python3 weights/make_single_file_fixture.py

The key renaming follows the rules of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
(written out here for our block counts). The result is checked by loading it back with diffusers'
own single-file loader (`StableDiffusionPipeline.from_single_file`) and comparing every weight
with the folder model, so the Swift loader is tested against diffusers' mapping, not ours.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import save_file  # noqa: E402  (byte-deterministic writer)

MODEL = os.path.join(HERE, "fixtures", "tiny-sd15")
OUT = os.path.join(HERE, "fixtures", "tiny-sd15-single-file.safetensors")


def unet_names(config):
    """diffusers UNet key prefix -> original prefix, for the blocks of `config`."""
    pairs = [("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
             ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2")]
    resnet_parts = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                    ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
    layers = config["layers_per_block"]
    blocks = len(config["block_out_channels"])
    resnets, attentions = [], []
    for i in range(blocks):
        for j in range(layers):
            resnets.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{i * (layers + 1) + j + 1}.0"))
            attentions.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{i * (layers + 1) + j + 1}.1"))
        if i < blocks - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(i + 1) * (layers + 1)}.0.op"))
    for i in range(blocks):
        for j in range(layers + 1):
            resnets.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{i * (layers + 1) + j}.0"))
            attentions.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{i * (layers + 1) + j}.1"))
        if i < blocks - 1:
            has_attention = config["up_block_types"][i].startswith("CrossAttn")
            pairs.append((f"up_blocks.{i}.upsamplers.0", f"output_blocks.{i * (layers + 1) + layers}."
                          f"{2 if has_attention else 1}"))
    resnets += [("mid_block.resnets.0", "middle_block.0"), ("mid_block.resnets.1", "middle_block.2")]
    attentions.append(("mid_block.attentions.0", "middle_block.1"))
    return pairs, resnets, resnet_parts, attentions


def convert_unet(state, config):
    pairs, resnets, resnet_parts, attentions = unet_names(config)
    out = {}
    for key, value in state.items():
        new = None
        for diffusers, original in resnets:
            if key.startswith(diffusers + "."):
                rest = key[len(diffusers) + 1:]
                for a, b in resnet_parts:
                    if rest.startswith(a + "."):
                        new = f"{original}.{b}{rest[len(a):]}"
        for diffusers, original in attentions + pairs:
            if new is None and key.startswith(diffusers + "."):
                new = original + key[len(diffusers):]
        assert new is not None, f"no original name for UNet key {key}"
        out["model.diffusion_model." + new] = value
    return out


def convert_vae(state, config):
    blocks = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    renames = [("encoder.conv_norm_out", "encoder.norm_out"), ("decoder.conv_norm_out", "decoder.norm_out")]
    for part in ("encoder", "decoder"):
        renames += [(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1"),
                    (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2"),
                    (f"{part}.mid_block.attentions.0.group_norm", f"{part}.mid.attn_1.norm"),
                    (f"{part}.mid_block.attentions.0.to_q", f"{part}.mid.attn_1.q"),
                    (f"{part}.mid_block.attentions.0.to_k", f"{part}.mid.attn_1.k"),
                    (f"{part}.mid_block.attentions.0.to_v", f"{part}.mid.attn_1.v"),
                    (f"{part}.mid_block.attentions.0.to_out.0", f"{part}.mid.attn_1.proj_out")]
    for i in range(blocks):
        for j in range(layers):
            renames.append((f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}"))
        renames.append((f"encoder.down_blocks.{i}.downsamplers.0", f"encoder.down.{i}.downsample"))
        level = blocks - 1 - i  # the original decoder numbers its levels from the bottom
        for j in range(layers + 1):
            renames.append((f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{level}.block.{j}"))
        renames.append((f"decoder.up_blocks.{i}.upsamplers.0", f"decoder.up.{level}.upsample"))
    out = {}
    for key, value in state.items():
        new = key
        for a, b in renames:
            if key.startswith(a + "."):
                new = b + key[len(a):]
                break
        new = new.replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original attention projections are 1x1 convs
        out["first_stage_model." + new] = value
    return out


def main():
    with open(os.path.join(MODEL, "unet", "config.json")) as f:
        unet_config = json.load(f)
    with open(os.path.join(MODEL, "vae", "config.json")) as f:
        vae_config = json.load(f)
    unet = load_file(os.path.join(MODEL, "unet", "diffusion_pytorch_model.safetensors"))
    vae = load_file(os.path.join(MODEL, "vae", "diffusion_pytorch_model.safetensors"))
    text = load_file(os.path.join(MODEL, "text_encoder", "model.safetensors"))
    tensors = {}
    tensors.update(convert_unet(unet, unet_config))
    tensors.update(convert_vae(vae, vae_config))
    for key, value in text.items():
        name = key if key.startswith("text_model.") else "text_model." + key
        tensors["cond_stage_model.transformer." + name] = value
    save_file(tensors, OUT, metadata={"command": "python3 weights/make_single_file_fixture.py",
                                      "source": "weights/fixtures/tiny-sd15"})
    check()
    print("wrote", OUT, len(tensors), "tensors")


def check():
    """Load the file with diffusers' single-file loader and compare with the folder model."""
    from diffusers import StableDiffusionPipeline
    folder = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None, requires_safety_checker=False)
    single = StableDiffusionPipeline.from_single_file(OUT, config=MODEL, safety_checker=None,
                                                      requires_safety_checker=False, local_files_only=True)
    for part in ("unet", "vae", "text_encoder"):
        a = getattr(folder, part).state_dict()
        b = getattr(single, part).state_dict()
        assert a.keys() == b.keys(), (part, set(a) ^ set(b))
        for key in a:
            assert torch.equal(a[key].float(), b[key].float().reshape(a[key].shape)), (part, key)
    print("diffusers from_single_file gives the folder model's weights exactly")


if __name__ == "__main__":
    main()
