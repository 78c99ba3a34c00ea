"""Few-step samplers as diffusers runs them: LCMScheduler, TCDScheduler, and every sampler with
`timestep_spacing="trailing"` (SD-Turbo's setting), on the tiny models.

    python3 weights/make_fewstep_fixtures.py      # after make_fixtures.py

Writes weights/fixtures/fewstep-sd15.safetensors: per case `<case>.latents.<i>` after every step
and `<case>.image` (decoded), from StableDiffusionPipeline with the case's scheduler; the settings
of each case are in the metadata (JSON under "cases"): model, scheduler class and the config
overrides it was made `from_config` with, steps, guidance scale, negative prompt, eta.
Prompt "a red apple", seed 7, 64x64.
"""

import json
import os

import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler, LMSDiscreteScheduler, PNDMScheduler,
                       StableDiffusionPipeline, TCDScheduler)

from recorded_runs import case_tensors, recorded_run, save_fixture

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "fewstep-sd15.safetensors")
MODELS = {"sd15": os.path.join(HERE, "fixtures", "tiny-sd15"), "sd2": os.path.join(HERE, "fixtures", "tiny-sd2")}
PROMPT, SEED = "a red apple", 7

# name: (model, scheduler class, overrides, steps, guidance scale, negative prompt, eta)
CASES = {
    "lcm_4": ("sd15", LCMScheduler, {}, 4, 1.0, None, 0.0),
    "lcm_4_cfg": ("sd15", LCMScheduler, {}, 4, 1.5, "blurry", 0.0),
    "lcm_3_original20_scaling5": ("sd15", LCMScheduler, {"original_inference_steps": 20, "timestep_scaling": 5.0},
                                  3, 1.0, None, 0.0),
    "lcm_1": ("sd15", LCMScheduler, {}, 1, 1.0, None, 0.0),
    "tcd_4_eta0.3": ("sd15", TCDScheduler, {}, 4, 1.0, None, 0.3),
    "tcd_4_eta0": ("sd15", TCDScheduler, {}, 4, 1.0, None, 0.0),
    "tcd_2_cfg_eta1": ("sd15", TCDScheduler, {}, 2, 2.0, "blurry", 1.0),
    "lcm_2_sd2": ("sd2", LCMScheduler, {}, 2, 1.0, None, 0.0),
}
for name, cls in [("ddim", DDIMScheduler), ("pndm", PNDMScheduler), ("euler", EulerDiscreteScheduler),
                  ("euler_a", EulerAncestralDiscreteScheduler), ("lms", LMSDiscreteScheduler),
                  ("dpmpp2m", DPMSolverMultistepScheduler)]:
    CASES[f"{name}_trailing"] = ("sd15", cls, {"timestep_spacing": "trailing"}, 4, 7.5, "blurry", 0.0)
# SD-Turbo's recipe on the SD 2-like model: Euler ancestral, trailing spacing, 1 step, no guidance.
CASES["euler_a_trailing_1_sd2"] = ("sd2", EulerAncestralDiscreteScheduler, {"timestep_spacing": "trailing"},
                                   1, 1.0, None, 0.0)
CASES["euler_a_trailing_4_sd2"] = ("sd2", EulerAncestralDiscreteScheduler, {"timestep_spacing": "trailing"},
                                   4, 1.0, None, 0.0)


def main():
    torch.set_num_threads(1)
    tensors, settings = {}, {}
    pipes, base_configs = {}, {}
    for case, (model, cls, overrides, steps, scale, negative, eta) in CASES.items():
        if model not in pipes:
            pipes[model] = StableDiffusionPipeline.from_pretrained(
                MODELS[model], torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
            pipes[model].set_progress_bar_config(disable=True)
            base_configs[model] = pipes[model].scheduler.config
        pipe = pipes[model]
        # Always from the model's own scheduler config, so no case's overrides reach the next.
        pipe.scheduler = cls.from_config(base_configs[model], **overrides)
        latents_after, image = recorded_run(pipe, SEED, prompt=PROMPT, negative_prompt=negative,
                                            num_inference_steps=steps, guidance_scale=scale, eta=eta)
        tensors.update(case_tensors(case, latents_after, image))
        settings[case] = dict(model=model, scheduler=cls.__name__, overrides=overrides, steps=steps,
                              guidance_scale=scale, negative_prompt=negative, eta=eta,
                              timesteps=[int(t) for t in pipe.scheduler.timesteps])
        print(case, [int(t) for t in pipe.scheduler.timesteps], "steps", len(latents_after))
    save_fixture(tensors, OUT, "python3 weights/make_fewstep_fixtures.py", cases=json.dumps(settings),
                 prompt=PROMPT, seed=str(SEED))


if __name__ == "__main__":
    main()
