"""What the pipeline-level fixture scripts share: a diffusers run that records the latents after
every step and decodes the result, and the fixture file they write.

Used by make_pipeline_fixtures.py, make_lora_fixtures.py, make_fewstep_fixtures.py and
make_nag_fixtures.py.
"""

import torch
import diffusers
import safetensors.torch


def recorded_run(pipe, seed, after_step=None, **kwargs):
    """Runs `pipe` with a CPU generator seeded `seed` (64x64 unless an img2img `image` is given)
    and returns (the latents after every step, vae.decode(latents / scaling_factor)).
    `after_step(i)` is called after step i, before the next one starts."""
    steps = []

    def on_step(pipeline, i, t, step_kwargs):
        steps.append(step_kwargs["latents"].detach().clone())
        if after_step is not None:
            after_step(i)
        return step_kwargs

    if "image" not in kwargs:
        kwargs.update(height=64, width=64)
    with torch.no_grad():
        latents = pipe(generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                       callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"],
                       **kwargs).images
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return steps, image


def case_tensors(case, steps, image):
    """`<case>.latents.<i>` for every step and `<case>.image`."""
    tensors = {f"{case}.latents.{i}": step for i, step in enumerate(steps)}
    tensors[f"{case}.image"] = image
    return tensors


def save_fixture(tensors, path, command, **metadata):
    """Writes `tensors` as float32 with the command, the torch and diffusers versions and
    `metadata` (strings) in the header."""
    header = {"command": command, "torch": torch.__version__, "diffusers": diffusers.__version__,
              **metadata}
    safetensors.torch.save_file({k: v.contiguous().float() for k, v in sorted(tensors.items())}, path,
                                metadata=header)
    print("wrote", path, len(tensors), "tensors")
