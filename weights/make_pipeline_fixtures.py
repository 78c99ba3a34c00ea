"""End-to-end reference runs of diffusers' StableDiffusionPipeline on the tiny fixture model.

Regenerate (after make_fixtures.py has written weights/fixtures/tiny-sd15):

    python3 weights/make_pipeline_fixtures.py

Writes weights/fixtures/pipeline-sd15.safetensors. For each case (a sampler and settings, see
CASES) it stores, all float32:
  <case>.prompt_embeds    [rows, 77, 32]  text embeddings fed to the UNet ([negative, positive]
                                          when guidance > 1, else [positive])
  <case>.latents.init     [1, 4, 8, 8]    latents before the first step
  <case>.latents.<i>      [1, 4, 8, 8]    latents after step i (0-based)
  <case>.image            [1, 3, 64, 64]  vae.decode(latents / scaling_factor), in about [-1, 1]
  img2img.init_image      [64, 64, 3]     the uint8 RGB start image of the img2img case, as floats
The settings of every case are in the metadata (JSON under "cases").
"""

import json
import sys

import numpy as np
import safetensors.torch
import torch
import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       StableDiffusionImg2ImgPipeline, StableDiffusionPipeline)
from PIL import Image

MODEL = "weights/fixtures/tiny-sd15"
OUT = "weights/fixtures/pipeline-sd15.safetensors"
PROMPT = "a red apple on a wooden table"
NEGATIVE = "green tones"
SEED = 42
STEPS = 4

SCHEDULERS = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "lms": (LMSDiscreteScheduler, {}),
    "dpmpp2m_sde_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True,
                                                         "algorithm_type": "sde-dpmsolver++"}),
}

# name -> (scheduler, negative prompt, guidance scale, guidance rescale, img2img strength)
CASES = {name: (name, NEGATIVE, 7.5, 0.0, None) for name in SCHEDULERS}
CASES["pndm_no_negative"] = ("pndm", None, 7.5, 0.0, None)
CASES["ddim_rescale"] = ("ddim", NEGATIVE, 7.5, 0.7, None)
CASES["euler_scale1"] = ("euler", NEGATIVE, 1.0, 0.0, None)
CASES["img2img"] = ("ddim", NEGATIVE, 7.5, 0.0, 0.75)
CASES["img2img_euler_a"] = ("euler_a", NEGATIVE, 7.5, 0.0, 0.5)
# The SD 2.x-like model with its own scheduler config (Euler, v-prediction, linspace) and its
# tokenizer that pads with "!".
SD2_MODEL = "weights/fixtures/tiny-sd2"
SD2_CASES = {"sd2_euler_v": NEGATIVE, "sd2_ddim_v": NEGATIVE}


def init_image():
    y, x = np.mgrid[0:64, 0:64]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1) % 256
    return rgb.astype(np.uint8)


def main():
    torch.set_num_threads(1)
    base = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    tensors = {"img2img.init_image": torch.from_numpy(init_image().astype(np.float32))}
    settings = {}
    for case, (scheduler_name, negative, scale, rescale, strength) in CASES.items():
        cls, extra = SCHEDULERS[scheduler_name]
        scheduler = cls.from_config(base.scheduler.config, **extra)
        components = dict(base.components, scheduler=scheduler)
        pipe_cls = StableDiffusionImg2ImgPipeline if strength is not None else StableDiffusionPipeline
        pipe = pipe_cls(**components)
        pipe.set_progress_bar_config(disable=True)
        steps = []

        def on_step(pipeline, i, t, kwargs):
            steps.append(kwargs["latents"].detach().clone())
            return kwargs

        embeds = {}

        def capture_unet(module, args, kwargs, output):
            if "prompt_embeds" not in embeds:
                embeds["prompt_embeds"] = kwargs["encoder_hidden_states"].detach().clone()

        handle = pipe.unet.register_forward_hook(capture_unet, with_kwargs=True)
        kwargs = dict(prompt=PROMPT, negative_prompt=negative, num_inference_steps=STEPS,
                      guidance_scale=scale, guidance_rescale=rescale,
                      generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent",
                      callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"])
        if strength is None:
            kwargs.update(height=64, width=64)
        else:
            kwargs.update(image=Image.fromarray(init_image()), strength=strength)
        with torch.no_grad():
            latents = pipe(**kwargs).images
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        handle.remove()
        tensors[f"{case}.prompt_embeds"] = embeds["prompt_embeds"]
        for i, step in enumerate(steps):
            tensors[f"{case}.latents.{i}"] = step
        tensors[f"{case}.image"] = image
        settings[case] = dict(scheduler=cls.__name__, scheduler_overrides=extra, negative_prompt=negative,
                              guidance_scale=scale, guidance_rescale=rescale, strength=strength,
                              steps=STEPS, seed=SEED, prompt=PROMPT, recorded_steps=len(steps))
        print(case, "steps", len(steps), "image range", float(image.min()), float(image.max()))
    sd2 = StableDiffusionPipeline.from_pretrained(SD2_MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                  requires_safety_checker=False)
    sd2.set_progress_bar_config(disable=True)
    for case, negative in SD2_CASES.items():
        if case == "sd2_ddim_v":
            sd2.scheduler = DDIMScheduler.from_config(sd2.scheduler.config)
        steps = []

        def on_sd2_step(pipeline, i, t, kwargs):
            steps.append(kwargs["latents"].detach().clone())
            return kwargs

        with torch.no_grad():
            latents = sd2(prompt=PROMPT, negative_prompt=negative, num_inference_steps=STEPS, guidance_scale=7.5,
                          generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent", height=64,
                          width=64, callback_on_step_end=on_sd2_step,
                          callback_on_step_end_tensor_inputs=["latents"]).images
            image = sd2.vae.decode(latents / sd2.vae.config.scaling_factor).sample
        for i, step in enumerate(steps):
            tensors[f"{case}.latents.{i}"] = step
        tensors[f"{case}.image"] = image
        settings[case] = dict(model=SD2_MODEL, scheduler=type(sd2.scheduler).__name__, negative_prompt=negative,
                              guidance_scale=7.5, steps=STEPS, seed=SEED, prompt=PROMPT,
                              recorded_steps=len(steps))
        print(case, "steps", len(steps), "image range", float(image.min()), float(image.max()))
    tensors = {k: v.contiguous().float() for k, v in tensors.items()}
    metadata = {"command": " ".join(["python3"] + sys.argv), "torch": torch.__version__,
                "diffusers": diffusers.__version__, "cases": json.dumps(settings)}
    safetensors.torch.save_file(tensors, OUT, metadata=metadata)
    print("wrote", OUT, len(tensors), "tensors")


if __name__ == "__main__":
    main()
