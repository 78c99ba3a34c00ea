"""CFG cutoff against diffusers' SDCFGCutoffCallback on the tiny fixture model.

Regenerate (after make_fixtures.py has written weights/fixtures/tiny-sd15):

    python3 weights/make_guidance_fixtures.py

Writes weights/fixtures/guidance-sd15.safetensors; per case of CASES (sampler, steps, cutoff
ratio), float32:
  <case>.latents.<i>   [1, 4, 8, 8]    latents after step i
  <case>.image         [1, 3, 64, 64]  vae.decode(latents / scaling_factor)
Prompt "a red apple on a wooden table", negative "green tones", guidance 7.5, seed 42, 64x64.
"""

import json

import torch
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, StableDiffusionPipeline
from diffusers.callbacks import SDCFGCutoffCallback

from recorded_runs import case_tensors, save_fixture

MODEL = "weights/fixtures/tiny-sd15"
OUT = "weights/fixtures/guidance-sd15.safetensors"
SCHEDULERS = {"euler": EulerDiscreteScheduler, "euler_a": EulerAncestralDiscreteScheduler}
# name -> (sampler, steps, cutoff ratio)
CASES = {"cutoff_euler": ("euler", 6, 0.5), "cutoff_euler_a": ("euler_a", 5, 0.4)}


def main():
    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    tensors, settings = {}, {}
    for case, (sampler, steps, ratio) in CASES.items():
        pipe.scheduler = SCHEDULERS[sampler].from_config(pipe.scheduler.config)
        cutoff = SDCFGCutoffCallback(cutoff_step_ratio=ratio)
        recorded = []

        def on_step(pipeline, i, t, step_kwargs):
            step_kwargs = cutoff(pipeline, i, t, step_kwargs)
            recorded.append(step_kwargs["latents"].detach().clone())
            return step_kwargs

        with torch.no_grad():
            latents = pipe("a red apple on a wooden table", negative_prompt="green tones",
                           num_inference_steps=steps, guidance_scale=7.5, height=64, width=64,
                           generator=torch.Generator("cpu").manual_seed(42), output_type="latent",
                           callback_on_step_end=on_step,
                           callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]).images
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        tensors.update(case_tensors(case, recorded, image))
        settings[case] = {"sampler": sampler, "steps": steps, "cutoff": ratio}
    save_fixture(tensors, OUT, "python3 weights/make_guidance_fixtures.py", cases=json.dumps(settings))


if __name__ == "__main__":
    main()
