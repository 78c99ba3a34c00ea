"""Dump the activations of a diffusers Stable Diffusion model for `sd verify`.

    python3 weights/dump_activations.py MODEL_DIR OUT.safetensors \\
        [--prompt TEXT] [--negative-prompt TEXT] [--seed N] [--steps N] [--size WxH] \\
        [--guidance-scale S] [--scheduler CLASS]
    python3 weights/dump_activations.py --random-sd15 DIR     # make a full-size random SD 1.5 folder

Runs MODEL_DIR (a diffusers folder, fp32 on the CPU) once and writes, in one safetensors file:
  inputs.prompt_ids, inputs.negative_ids      [77]        token ids (as floats)
  inputs.latents                               [1,4,h,w]   initial latents (seeded)
  inputs.timesteps                             [steps]     the scheduler's timesteps
  text_encoder.<prompt|negative>.hidden.<L>    [1,77,D]    hidden state after layer L (0 = embeddings)
  text_encoder.<prompt|negative>.last_hidden_state
SDXL folders (text_encoder_2/) add:
  inputs.prompt_ids_2, inputs.negative_ids_2   [77]        the second tokenizer's ids
  text_encoder_2.<prompt|negative>.hidden.<L>, .text_embeds   the second encoder's states and
                                                           its pooled projection
  unet.step0.text_embeds, unet.step0.time_ids, unet.step0.add_embedding
                                                           the added conditions at the first step
  unet.step0.<time_embedding|conv_in|down_blocks.i|mid_block|up_blocks.i|out>
                                               outputs of the UNet blocks at the first step
  unet.step0.sample, unet.step0.encoder_hidden_states   the UNet's inputs at the first step
  guidance.noise_pred.<i>                      [1,4,h,w]   guided noise prediction of step i
  latents.<i>                                  [1,4,h,w]   latents after step i
  vae.decoder.<conv_in|mid_block|up_blocks.i>, vae.image   the decoder's blocks and output
The metadata records the settings (JSON under "settings") and library versions.
"""

import argparse
import json
import os
import sys

import diffusers
import safetensors.torch
import torch
import transformers
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline


def parse_size(text):
    width, height = text.lower().split("x")
    return int(width), int(height)


def hidden_states(encoder, ids, prefix, out):
    with torch.no_grad():
        result = encoder(ids, output_hidden_states=True)
    for layer, state in enumerate(result.hidden_states):
        out[f"{prefix}.hidden.{layer}"] = state
    out[f"{prefix}.last_hidden_state"] = result.last_hidden_state
    if getattr(result, "text_embeds", None) is not None:
        out[f"{prefix}.text_embeds"] = result.text_embeds


def dump(args):
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sdxl = os.path.isdir(os.path.join(args.model, "text_encoder_2"))
    if sdxl:
        pipe = StableDiffusionXLPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None,
                                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler:
        pipe.scheduler = getattr(diffusers, args.scheduler).from_config(pipe.scheduler.config)
    width, height = parse_size(args.size) if args.size else (pipe.unet.config.sample_size * pipe.vae_scale_factor,) * 2
    out = {}

    def tokenize(tokenizer, text):
        return tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids

    encoders = [("", pipe.tokenizer, pipe.text_encoder)]
    if sdxl:
        encoders.append(("_2", pipe.tokenizer_2, pipe.text_encoder_2))
    for suffix, tokenizer, encoder in encoders:
        prompt_ids, negative_ids = tokenize(tokenizer, args.prompt), tokenize(tokenizer, args.negative_prompt)
        out[f"inputs.prompt_ids{suffix}"] = prompt_ids[0].float()
        out[f"inputs.negative_ids{suffix}"] = negative_ids[0].float()
        hidden_states(encoder, prompt_ids, f"text_encoder{suffix}.prompt", out)
        hidden_states(encoder, negative_ids, f"text_encoder{suffix}.negative", out)

    calls = {"unet": 0}
    handles = []

    def block_hook(name):
        def hook(module, inputs, output):
            if calls["unet"] == 0:
                out[f"unet.step0.{name}"] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    unet = pipe.unet
    for name in ["time_embedding", "conv_in", "mid_block"] + (["add_embedding"] if sdxl else []):
        handles.append(getattr(unet, name).register_forward_hook(block_hook(name)))
    for i, block in enumerate(unet.down_blocks):
        handles.append(block.register_forward_hook(block_hook(f"down_blocks.{i}")))
    for i, block in enumerate(unet.up_blocks):
        handles.append(block.register_forward_hook(block_hook(f"up_blocks.{i}")))

    def unet_io(module, args_, kwargs, output):
        if calls["unet"] == 0:
            out["unet.step0.sample"] = args_[0].detach().clone()
            out["unet.step0.encoder_hidden_states"] = kwargs["encoder_hidden_states"].detach().clone()
            added = kwargs.get("added_cond_kwargs") or {}
            for key in ("text_embeds", "time_ids"):
                if key in added:
                    out[f"unet.step0.{key}"] = added[key].detach().clone()
            out["unet.step0.out"] = output[0].detach().clone()
        calls["unet"] += 1

    handles.append(unet.register_forward_hook(unet_io, with_kwargs=True))

    scheduler_step = pipe.scheduler.step
    steps = {"i": 0}

    def step(model_output, timestep, sample, *rest, **kwargs):
        if steps["i"] == 0:
            out["inputs.latents"] = sample.detach().clone()
        out[f"guidance.noise_pred.{steps['i']}"] = model_output.detach().clone()
        result = scheduler_step(model_output, timestep, sample, *rest, **kwargs)
        out[f"latents.{steps['i']}"] = (result[0] if isinstance(result, tuple) else result.prev_sample).detach().clone()
        steps["i"] += 1
        return result

    pipe.scheduler.step = step
    with torch.no_grad():
        latents = pipe(prompt=args.prompt, negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
                       guidance_scale=args.guidance_scale, height=height, width=width,
                       generator=torch.Generator("cpu").manual_seed(args.seed), output_type="latent").images
    for handle in handles:
        handle.remove()
    out["inputs.timesteps"] = pipe.scheduler.timesteps.float()

    decoder = pipe.vae.decoder
    vae_handles = [decoder.conv_in.register_forward_hook(lambda m, i, o: out.__setitem__("vae.decoder.conv_in", o)),
                   decoder.mid_block.register_forward_hook(lambda m, i, o: out.__setitem__("vae.decoder.mid_block", o))]
    for i, block in enumerate(decoder.up_blocks):
        vae_handles.append(block.register_forward_hook(
            lambda m, inp, o, i=i: out.__setitem__(f"vae.decoder.up_blocks.{i}", o)))
    with torch.no_grad():
        out["vae.image"] = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    for handle in vae_handles:
        handle.remove()

    settings = dict(prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps,
                    width=width, height=height, guidance_scale=args.guidance_scale,
                    scheduler=type(pipe.scheduler).__name__, model=os.path.abspath(args.model))
    metadata = {"command": " ".join(["python3"] + sys.argv), "torch": torch.__version__,
                "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "settings": json.dumps(settings)}
    tensors = {k: v.detach().contiguous().float() for k, v in out.items()}
    safetensors.torch.save_file(tensors, args.output, metadata=metadata)
    print(f"wrote {args.output}: {len(tensors)} tensors, {steps['i']} steps")


def random_sd15(folder):
    """A full-size SD 1.5 diffusers folder with seeded random weights (fp32 files, ~4.3 GB)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_fixtures  # the tokenizer writer and the released scheduler config live there
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu", projection_dim=768))
    os.makedirs(folder, exist_ok=True)
    unet.save_pretrained(os.path.join(folder, "unet"))
    vae.save_pretrained(os.path.join(folder, "vae"))
    text.save_pretrained(os.path.join(folder, "text_encoder"))
    make_fixtures.write_clip_tokenizer(os.path.join(folder, "tokenizer"), "<|endoftext|>")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                  skip_prk_steps=True, steps_offset=1).save_pretrained(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
                   "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                   "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                   "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [None, None],
                   "feature_extractor": [None, None], "requires_safety_checker": False}, f, indent=2)
    print(f"wrote a random full-size SD 1.5 folder to {folder}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("output", nargs="?")
    parser.add_argument("--prompt", default="a red apple on a wooden table")
    parser.add_argument("--negative-prompt", default="green tones")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", help="WxH in pixels (default: the model's native size)")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--scheduler", help="a diffusers scheduler class name (default: the model's)")
    parser.add_argument("--random-sd15", metavar="DIR", help="write a full-size random SD 1.5 folder and exit")
    args = parser.parse_args()
    if args.random_sd15:
        random_sd15(args.random_sd15)
        return
    if not args.model or not args.output:
        parser.error("MODEL_DIR and OUT.safetensors are required")
    dump(args)


if __name__ == "__main__":
    main()
