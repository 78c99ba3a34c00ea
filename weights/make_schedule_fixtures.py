"""Align Your Steps schedules against diffusers on the tiny fixture model.

Regenerate (after make_fixtures.py has written weights/fixtures/tiny-sd15):

    python3 weights/make_schedule_fixtures.py

Writes weights/fixtures/schedules-sd15.safetensors; per case of CASES (sampler, steps), float32:
  <case>.latents.<i>   [1, 4, 8, 8]    latents after step i
  <case>.image         [1, 3, 64, 64]  vae.decode(latents / scaling_factor)
  <case>.sigmas        [steps + 1]     the σs the sampler stepped on
Prompt "a red apple on a wooden table", negative "green tones", guidance 7.5, seed 42, 64x64.

The σs: diffusers' AysSchedules["StableDiffusionSigmas"] at 10 steps; for other counts the
published 11 levels (the 10-step list with its 11th level 0.029) interpolated linearly in log σ
to steps + 1 levels, the last replaced by 0 (the paper's loglinear_interp, as ComfyUI does).
Euler takes them through diffusers' own `sigmas=` argument; LMS and DPM-Solver++ take them in
the place of their Karras σs (use_karras_sigmas with _convert_to_karras returning them); Euler
ancestral, whose diffusers class has neither, gets them set after set_timesteps.
"""

import json

import numpy as np
import torch
from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       LMSDiscreteScheduler, StableDiffusionPipeline)
from diffusers.schedulers.scheduling_utils import AysSchedules

from recorded_runs import case_tensors, recorded_run, save_fixture

MODEL = "weights/fixtures/tiny-sd15"
OUT = "weights/fixtures/schedules-sd15.safetensors"
LEVELS = AysSchedules["StableDiffusionSigmas"][:-1] + [0.029]
# name -> (sampler, steps)
CASES = {"ays_euler": ("euler", 10), "ays_euler_7": ("euler", 7), "ays_euler_a": ("euler_a", 10),
         "ays_lms": ("lms", 12), "ays_dpm": ("dpm", 10), "ays_dpm_6": ("dpm", 6)}


def ays_sigmas(steps):
    """steps + 1 σs ending in 0."""
    if steps + 1 == len(LEVELS):
        levels = np.array(LEVELS)
    else:
        xs = np.linspace(0, 1, len(LEVELS))
        ys = np.log(np.array(LEVELS)[::-1])
        levels = np.exp(np.interp(np.linspace(0, 1, steps + 1), xs, ys))[::-1].copy()
    levels[-1] = 0
    return levels


def main():
    torch.set_num_threads(1)
    assert list(ays_sigmas(10)) == AysSchedules["StableDiffusionSigmas"]
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    config = pipe.scheduler.config
    tensors, settings = {}, {}
    for case, (sampler, steps) in CASES.items():
        sigmas = ays_sigmas(steps)
        kwargs = dict(num_inference_steps=steps)
        if sampler == "euler":
            pipe.scheduler = EulerDiscreteScheduler.from_config(config)
            kwargs = dict(sigmas=list(sigmas))
        elif sampler == "euler_a":
            scheduler = EulerAncestralDiscreteScheduler.from_config(config)
            plain = scheduler.set_timesteps
            helper = EulerDiscreteScheduler.from_config(config)
            log_sigmas = np.log((((1 - helper.alphas_cumprod) / helper.alphas_cumprod) ** 0.5).numpy())

            def set_timesteps(num_inference_steps, device=None, scheduler=scheduler, plain=plain):
                plain(num_inference_steps, device)
                chosen = np.array(sigmas).astype(np.float32)
                scheduler.timesteps = torch.from_numpy(
                    np.array([helper._sigma_to_t(s, log_sigmas) for s in chosen[:-1]]).astype(np.float32))
                scheduler.sigmas = torch.from_numpy(chosen)

            scheduler.set_timesteps = set_timesteps
            pipe.scheduler = scheduler
        else:
            kind = LMSDiscreteScheduler if sampler == "lms" else DPMSolverMultistepScheduler
            pipe.scheduler = kind.from_config(config, use_karras_sigmas=True)
            pipe.scheduler._convert_to_karras = lambda in_sigmas, num_inference_steps=None, sigmas=sigmas: np.array(sigmas[:-1])
        recorded, image = recorded_run(pipe, 42, prompt="a red apple on a wooden table",
                                       negative_prompt="green tones", guidance_scale=7.5, **kwargs)
        tensors.update(case_tensors(case, recorded, image))
        tensors[f"{case}.sigmas"] = pipe.scheduler.sigmas.float().clone()
        settings[case] = {"sampler": sampler, "steps": steps}
    save_fixture(tensors, OUT, "python3 weights/make_schedule_fixtures.py", cases=json.dumps(settings))


if __name__ == "__main__":
    main()
