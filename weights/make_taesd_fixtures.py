"""TAESD (diffusers' AutoencoderTiny) references: a tiny random AutoencoderTiny, its decoder and
encoder on a few inputs, and a whole tiny-sd15 run decoded by it.

Regenerate (after make_fixtures.py has written weights/fixtures/tiny-sd15):

    python3 weights/make_taesd_fixtures.py

Writes
  weights/fixtures/tiny-taesd/        AutoencoderTiny, 4 stages of 12 channels (x8 like the SD VAE),
                                      blocks (1, 1, 2, 1) / (2, 1, 1, 1), seeded weights, F32
  weights/fixtures/tiny-taesd-fp16/   the same model saved in F16 (madebyollin's files are F16)
  weights/fixtures/taesd-sd15.safetensors, float32:
    decode.latents / decode.out      [2, 4, 8, 8] / [2, 3, 64, 64]   vae.decode(latents); latents[1]
                                                                       x3 so tanh's clamp acts
    decode_odd.latents / .out        [1, 4, 5, 7] / [1, 3, 40, 56]
    encode.image / encode.latents    [1, 3, 64, 64] / [1, 4, 8, 8]   vae.encode(image).latents
    encode_odd.image / .latents      [1, 3, 40, 56] / [1, 4, 5, 7]
    fp16.decode.out                  [2, 3, 64, 64]   tiny-taesd-fp16 (upcast to F32) on decode.latents
    pipeline.latents.<i>             [1, 4, 8, 8]     latents after step i
    pipeline.image                   [1, 3, 64, 64]   pipe.vae.decode(latents / scaling_factor), [-1, 1]
    pipeline.output                  [1, 3, 64, 64]   the pipeline's own output_type="pt" image, [0, 1]
The pipeline run: StableDiffusionPipeline tiny-sd15 with pipe.vae = the tiny AutoencoderTiny
(diffusers then divides the latents by the tiny VAE's scaling_factor, 1.0), Euler, 4 steps,
"a red apple on a wooden table", negative "green tones", guidance 7.5, seed 42, 64x64.
"""

import copy
import json
import os
import sys

import torch
from diffusers import AutoencoderTiny, EulerDiscreteScheduler, StableDiffusionPipeline

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import fix_permissions, save_file  # noqa: E402
from recorded_runs import case_tensors, recorded_run, save_fixture  # noqa: E402

COMMAND = "python3 weights/make_taesd_fixtures.py"
MODEL = "weights/fixtures/tiny-sd15"
TAESD = "weights/fixtures/tiny-taesd"
TAESD_FP16 = "weights/fixtures/tiny-taesd-fp16"
OUT = "weights/fixtures/taesd-sd15.safetensors"
SEED = 42
WEIGHT_SEED = 2024
CONFIG = dict(
    encoder_block_out_channels=[12, 12, 12, 12], decoder_block_out_channels=[12, 12, 12, 12],
    num_encoder_blocks=[1, 1, 2, 1], num_decoder_blocks=[2, 1, 1, 1], latent_channels=4)


def seeded(model, seed):
    """Every weight ~ N(0, 1/fan_in) (outputs stay O(1) through the ReLU stack), biases 0.1 N(0, 1)."""
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(noise * (0.1 if name.endswith("bias") else 1.0 / fan_in ** 0.5))
        # Centres the decoder's output (x * 2 - 1) near 0, so the test image is not mostly clipped.
        model.decoder.layers[-1].bias += 0.5
    return model


def save_model(model, folder, dtype):
    """save_pretrained, then the weights rewritten by the byte-deterministic writer with our
    metadata (the config as diffusers wrote it)."""
    model.to(dtype).save_pretrained(folder)
    path = f"{folder}/diffusion_pytorch_model.safetensors"
    tensors = {k: v.to(dtype) for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata={"format": "pt", "command": COMMAND, "seed": str(WEIGHT_SEED),
                                       "torch": torch.__version__, "component": "AutoencoderTiny"})
    fix_permissions(folder)


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    taesd = seeded(AutoencoderTiny(**CONFIG), WEIGHT_SEED).eval()
    save_model(copy.deepcopy(taesd), TAESD, torch.float32)
    save_model(copy.deepcopy(taesd), TAESD_FP16, torch.float16)
    taesd = AutoencoderTiny.from_pretrained(TAESD).eval()
    half = AutoencoderTiny.from_pretrained(TAESD_FP16, torch_dtype=torch.float32).eval()

    g = torch.Generator("cpu").manual_seed(SEED)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    latents[1] *= 3
    odd = torch.randn(1, 4, 5, 7, generator=g)
    image = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    image_odd = torch.rand(1, 3, 40, 56, generator=g) * 2 - 1
    tensors = {}
    with torch.no_grad():
        tensors["decode.latents"], tensors["decode.out"] = latents, taesd.decode(latents).sample
        tensors["decode_odd.latents"], tensors["decode_odd.out"] = odd, taesd.decode(odd).sample
        tensors["encode.image"], tensors["encode.latents"] = image, taesd.encode(image).latents
        tensors["encode_odd.image"] = image_odd
        tensors["encode_odd.latents"] = taesd.encode(image_odd).latents
        tensors["fp16.decode.out"] = half.decode(latents).sample
    for name in ("decode.out", "encode.latents", "fp16.decode.out"):
        t = tensors[name]
        print(f"{name}: mean {t.mean():.3f} std {t.std():.3f} min {t.min():.3f} max {t.max():.3f}")

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.vae = taesd
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    request = dict(prompt="a red apple on a wooden table", negative_prompt="green tones",
                   num_inference_steps=4, guidance_scale=7.5)
    steps, decoded = recorded_run(pipe, SEED, **request)
    tensors.update(case_tensors("pipeline", steps, decoded))
    with torch.no_grad():
        tensors["pipeline.output"] = pipe(generator=torch.Generator("cpu").manual_seed(SEED), height=64,
                                          width=64, output_type="pt", **request).images
    settings = {"sampler": "euler", "steps": 4, "guidance": 7.5, "seed": SEED, "size": 64}
    save_fixture(tensors, OUT, COMMAND, taesd=json.dumps(CONFIG), pipeline=json.dumps(settings))
    os.chmod(OUT, 0o644)


if __name__ == "__main__":
    main()
