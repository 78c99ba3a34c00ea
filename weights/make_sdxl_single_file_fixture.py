#!/usr/bin/env python3
"""Writes weights/fixtures/tiny-sdxl-single-file.safetensors: the tiny SDXL fixture model
(weights/fixtures/tiny-sdxl) in the single-file layout of `sd_xl_base_1.0.safetensors`:

    model.diffusion_model.*                    the UNet, LDM names (+ label_emb.0.0/0.2)
    conditioner.embedders.0.transformer.*      CLIP ViT-L, transformers' names under text_model.
    conditioner.embedders.1.model.*            OpenCLIP ViT-bigG, open_clip's names
    first_stage_model.*                        the VAE, LDM names

    python3 weights/make_sdxl_single_file_fixture.py

The renaming is the reverse of diffusers' loaders/single_file_utils.py (convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint), written
out by hand; the UNet and VAE rules are shared with make_single_file_fixture.py. The second
encoder's q/k/v projections are stacked into `attn.in_proj_weight`/`in_proj_bias` and its
`text_projection` is stored transposed (open_clip applies it as x @ P). The file also carries
`logit_scale`, as the released checkpoint does (CLIP's contrastive temperature, which no text
encoding reads). Weights stay fp16, as in the folder. The result is checked by loading it back
with diffusers' own StableDiffusionXLPipeline.from_single_file (the second text encoder through
its convert_open_clip_checkpoint: see check()) and comparing every tensor with the folder model,
so the Swift loader is tested against diffusers' mapping, not ours.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import save_file  # noqa: E402
from make_single_file_fixture import convert_unet, convert_vae  # noqa: E402

MODEL = os.path.join(HERE, "fixtures", "tiny-sdxl")
OUT = os.path.join(HERE, "fixtures", "tiny-sdxl-single-file.safetensors")
OPEN_CLIP = "conditioner.embedders.1.model."


def convert_sdxl_unet(state, config):
    """The SD 1.x rules plus SDXL's added embedding: add_embedding.linear_1/2 = label_emb.0.0/0.2."""
    added = {"add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    out, rest = {}, {}
    for key, value in state.items():
        layer, _, suffix = key.rpartition(".")
        if layer in added:
            out[f"model.diffusion_model.{added[layer]}.{suffix}"] = value
        else:
            rest[key] = value
    out.update(convert_unet(rest, config))
    return out


def convert_open_clip(state, layers):
    """transformers' CLIPTextModelWithProjection keys -> open_clip's (the reverse of diffusers'
    convert_open_clip_checkpoint)."""
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
        # diffusers: text_projection.weight = checkpoint["text_projection"].T
        "text_projection": state.pop("text_projection.weight").T.contiguous(),
        "logit_scale": torch.tensor(math.log(1 / 0.07), dtype=torch.float16),
    }
    for i in range(layers):
        a, b = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for suffix in ("weight", "bias"):
            # diffusers splits in_proj into rows [0, d), [d, 2d), [2d, 3d) for q, k, v.
            out[f"{b}attn.in_proj_{suffix}"] = torch.cat(
                [state.pop(f"{a}self_attn.{p}_proj.{suffix}") for p in ("q", "k", "v")])
            for new, old in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                             ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[f"{b}{new}.{suffix}"] = state.pop(f"{a}{old}.{suffix}")
    assert not state, f"unmapped text_encoder_2 keys: {sorted(state)}"
    return {OPEN_CLIP + k: v for k, v in out.items()}


def main():
    def config(part):
        with open(os.path.join(MODEL, part, "config.json")) as f:
            return json.load(f)

    unet = load_file(os.path.join(MODEL, "unet", "diffusion_pytorch_model.safetensors"))
    vae = load_file(os.path.join(MODEL, "vae", "diffusion_pytorch_model.safetensors"))
    text = load_file(os.path.join(MODEL, "text_encoder", "model.safetensors"))
    text2 = load_file(os.path.join(MODEL, "text_encoder_2", "model.safetensors"))
    tensors = {}
    tensors.update(convert_sdxl_unet(unet, config("unet")))
    tensors.update(convert_vae(vae, config("vae")))
    for key, value in text.items():
        name = key if key.startswith("text_model.") else "text_model." + key
        tensors["conditioner.embedders.0.transformer." + name] = value
    tensors.update(convert_open_clip(text2, config("text_encoder_2")["num_hidden_layers"]))
    assert all(t.dtype == torch.float16 for t in tensors.values())
    save_file(tensors, OUT, metadata={"command": "python3 weights/make_sdxl_single_file_fixture.py",
                                      "source": "weights/fixtures/tiny-sdxl"})
    check()
    print("wrote", OUT, len(tensors), "tensors")


def check():
    """Load the file with diffusers' single-file loader and compare with the folder model.

    from_single_file tells the two text encoders apart by width (single_file_utils'
    create_diffusers_clip_model_from_ldm takes the CLIP-L branch whenever
    `conditioner.embedders.0...position_embedding` is as wide as the model it fills); both tiny
    encoders are 32 wide, so it fills text_encoder_2 from embedder 0 and leaves text_projection
    unloaded. (Released SDXL's 768 and 1280 do not collide.) The second encoder is therefore
    converted with the function that branch would have called, convert_open_clip_checkpoint."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from safetensors.torch import load_file as load
    from transformers import CLIPTextModelWithProjection
    folder = StableDiffusionXLPipeline.from_pretrained(MODEL)
    single = StableDiffusionXLPipeline.from_single_file(OUT, config=MODEL, local_files_only=True)
    text2 = CLIPTextModelWithProjection(folder.text_encoder_2.config)
    text2.load_state_dict(convert_open_clip_checkpoint(text2, load(OUT), prefix=OPEN_CLIP), strict=True)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a = getattr(folder, part).state_dict()
        b = (text2 if part == "text_encoder_2" else getattr(single, part)).state_dict()
        assert a.keys() == b.keys(), (part, set(a) ^ set(b))
        for key in a:
            assert torch.equal(a[key].float(), b[key].float().reshape(a[key].shape)), (part, key)
    print("diffusers' single-file conversion gives the folder model's weights exactly")


if __name__ == "__main__":
    main()
