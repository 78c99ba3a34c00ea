"""PyTorch/diffusers timings of the SD 1.5 model parts at the shapes `bench` uses, so the bench
can print ours/PyTorch ratios measured in the same session on the same cores.

    python3 Benchmarks/pytorch_baseline.py --threads 2 [--skip-large] > baseline.json
    swift run -c release bench --pytorch baseline.json
    python3 Benchmarks/pytorch_baseline.py --threads 2 --model-type sdxl   # bench --model-type sdxl
    python3 Benchmarks/pytorch_baseline.py --threads 2 --serve-unet 64     # bench --interleave N

Weights are random (the released SD 1.5 or SDXL base configs, fp32); only the time matters. Prints
one JSON object with seconds per part (median of the timed runs after one warm-up) and peak RSS.
With --serve-unet SIZE it builds the SD 1.5 UNet, runs one warm-up CFG step at SIZE x SIZE
latents, prints "ready", then times one step per line read from stdin and prints its seconds:
the bench alternates these steps with its own, so both see the same minutes of a shared host.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768, attention_head_dim=8)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
           block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
CLIP = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")

# stabilityai/stable-diffusion-xl-base-1.0's unet/, text_encoder_2/ (text_encoder/ is CLIP above).
UNET_XL = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
               block_out_channels=(320, 640, 1280),
               down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
               up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
               cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
               transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
               addition_embed_type="text_time", addition_time_embed_dim=256,
               projection_class_embeddings_input_dim=2816)
CLIP_XL_2 = CLIPTextConfig(vocab_size=49408, hidden_size=1280, intermediate_size=5120,
                           num_hidden_layers=32, num_attention_heads=20, max_position_embeddings=77,
                           hidden_act="gelu", projection_dim=1280)


def timed(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sdxl(result, unet_runs):
    """SDXL base at 1024x1024, rows named as `bench --model-type sdxl` names its own: both text
    encoders at batch 2 (hidden states kept, as the pipeline takes the penultimate ones), one CFG
    UNet step at 128x128 latents with the text_time added conditions, and the VAE decode of a
    128x128 latent tiled as diffusers' enable_tiling() does with 64-latent tiles overlapping by a
    quarter (sample_size 512: SDXL's vae/config.json says 1024, which would decode the 1024x1024
    image as one tile; ours tiles at 64 latents)."""
    ids = torch.full((2, 77), 49407, dtype=torch.long)
    ids[:, 0] = 49406
    clip = CLIPTextModel(CLIP).eval()
    clip2 = CLIPTextModelWithProjection(CLIP_XL_2).eval()
    result["SDXL text encoders batch 2"] = timed(
        lambda: (clip(ids, output_hidden_states=True), clip2(ids, output_hidden_states=True)), 3)
    del clip, clip2
    unet = UNet2DConditionModel(**UNET_XL).eval()
    sample = torch.randn(2, 4, 128, 128)
    t = torch.tensor([999, 999])
    context = torch.randn(2, 77, 2048)
    added = {"text_embeds": torch.randn(2, 1280),
             "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2)}
    result["SDXL UNet batch 2 latent 128x128"] = timed(
        lambda: unet(sample, t, context, added_cond_kwargs=added), unet_runs)
    del unet
    vae = AutoencoderKL(**VAE, scaling_factor=0.13025).eval()
    vae.enable_tiling()
    latents = torch.randn(1, 4, 128, 128)
    result["SDXL VAE decode tiled 128x128 -> 1024x1024"] = timed(lambda: vae.decode(latents), 1)
    # The same projection the bench makes of its pipeline run: two prompts through both
    # encoders, 20 CFG steps, one tiled decode.
    result["txt2img 1024x1024 projected 20 steps"] = (
        result["SDXL text encoders batch 2"] + 20 * result["SDXL UNet batch 2 latent 128x128"]
        + result["SDXL VAE decode tiled 128x128 -> 1024x1024"])


def serve_unet(size):
    """One CFG UNet step (batch 2) per stdin line, its seconds printed as soon as it ends."""
    unet = UNet2DConditionModel(**UNET).eval()
    sample = torch.randn(2, 4, size, size)
    t = torch.tensor([999, 999])
    context = torch.randn(2, 77, 768)
    unet(sample, t, context)
    print("ready", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        unet(sample, t, context)
        print(time.perf_counter() - start, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--model-type", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--unet-runs", type=int, default=1)
    parser.add_argument("--serve-unet", type=int, metavar="SIZE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.serve_unet:
        with torch.inference_mode():
            serve_unet(args.serve_unet)
        return
    # The vector ISA ATen's kernels use, and the one oneDNN's convolutions may use (both can be
    # capped by the environment: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2).
    result = {"torch": torch.__version__, "threads": args.threads,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default")}
    if args.model_type == "sdxl":
        with torch.inference_mode():
            sdxl(result, args.unet_runs)
        result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(result))
        return
    with torch.inference_mode():
        clip = CLIPTextModel(CLIP).eval()
        ids = torch.full((2, 77), 49407, dtype=torch.long)
        ids[:, 0] = 49406
        result["CLIP text encoder batch 2"] = timed(lambda: clip(ids), 3)
        del clip
        unet = UNet2DConditionModel(**UNET).eval()
        context = torch.randn(2, 77, 768)
        for size in ([32] if args.skip_large else [32, 64]):
            sample = torch.randn(2, 4, size, size)
            t = torch.tensor([999, 999])
            result[f"UNet batch 2 latent {size}x{size}"] = timed(lambda: unet(sample, t, context), 1 if size == 64 else 2)
        del unet
        if not args.skip_large:
            vae = AutoencoderKL(**VAE).eval()
            latents = torch.randn(1, 4, 64, 64)
            result["VAE decode 64x64 -> 512x512"] = timed(lambda: vae.decode(latents), 1)
            image = torch.randn(1, 3, 512, 512)
            result["VAE encode 512x512"] = timed(lambda: vae.encode(image), 1)
            # The same projection the bench makes of its pipeline run: two prompts encoded,
            # 20 CFG steps (UNet batch 2), one decode.
            result["txt2img 512x512 projected 20 steps"] = (
                result["CLIP text encoder batch 2"] + 20 * result["UNet batch 2 latent 64x64"]
                + result["VAE decode 64x64 -> 512x512"])
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
