"""End-to-end reference runs of diffusers' StableDiffusionPipeline on the tiny fixture model.

Regenerate (after make_fixtures.py has written weights/fixtures/tiny-sd15):

    python3 weights/make_pipeline_fixtures.py

Writes weights/fixtures/pipeline-sd15.safetensors. For each case (a sampler and settings, see
CASES) it stores, all float32:
  <case>.prompt_embeds    [rows, 77, 32]  text embeddings fed to the UNet ([negative, positive]
                                          when guidance > 1, else [positive])
  <case>.latents.<i>      [1, 4, 8, 8]    latents after step i (0-based)
  <case>.image            [1, 3, 64, 64]  vae.decode(latents / scaling_factor), in about [-1, 1]
  img2img.init_image      [64, 64, 3]     the uint8 RGB start image of the img2img case, as floats
The settings of every case are in the metadata (JSON under "cases").
"""

import json
import sys

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       StableDiffusionImg2ImgPipeline, StableDiffusionPipeline)
from PIL import Image

from recorded_runs import case_tensors, recorded_run, save_fixture

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
        embeds = {}

        def capture_unet(module, args, kwargs, output):
            if "prompt_embeds" not in embeds:
                embeds["prompt_embeds"] = kwargs["encoder_hidden_states"].detach().clone()

        handle = pipe.unet.register_forward_hook(capture_unet, with_kwargs=True)
        kwargs = dict(prompt=PROMPT, negative_prompt=negative, num_inference_steps=STEPS,
                      guidance_scale=scale, guidance_rescale=rescale)
        if strength is not None:
            kwargs.update(image=Image.fromarray(init_image()), strength=strength)
        steps, image = recorded_run(pipe, SEED, **kwargs)
        handle.remove()
        tensors[f"{case}.prompt_embeds"] = embeds["prompt_embeds"]
        tensors.update(case_tensors(case, steps, image))
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
        steps, image = recorded_run(sd2, SEED, prompt=PROMPT, negative_prompt=negative, num_inference_steps=STEPS,
                                    guidance_scale=7.5)
        tensors.update(case_tensors(case, steps, image))
        settings[case] = dict(model=SD2_MODEL, scheduler=type(sd2.scheduler).__name__, negative_prompt=negative,
                              guidance_scale=7.5, steps=STEPS, seed=SEED, prompt=PROMPT,
                              recorded_steps=len(steps))
        print(case, "steps", len(steps), "image range", float(image.min()), float(image.max()))
    save_fixture(tensors, OUT, " ".join(["python3"] + sys.argv), cases=json.dumps(settings))


if __name__ == "__main__":
    main()
