"""Scheduler configs exactly as diffusers saves them, one per scheduler class we read.

    python3 weights/make_scheduler_configs.py

Writes weights/fixtures/scheduler-configs/<ClassName>.json with `save_config` (Python's json
module, so non-finite numbers appear as NaN / Infinity / -Infinity, e.g. DPMSolverMultistep's
`lambda_min_clipped`). Each class is saved with its own defaults; `<ClassName>-sd15.json` adds
SD 1.5's betas and offsets (what a pipeline folder saved by diffusers holds).
"""

import json
import os
import tempfile

import diffusers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "scheduler-configs")
CLASSES = ["DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
           "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler",
           "DPMSolverMultistepScheduler", "LCMScheduler", "TCDScheduler"]
# stable-diffusion-v1-5's scheduler settings, applied on top of each class's defaults.
SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "steps_offset": 1, "skip_prk_steps": True, "set_alpha_to_one": False, "clip_sample": False}


def save(scheduler, name):
    with tempfile.TemporaryDirectory() as folder:
        scheduler.save_config(folder)
        with open(os.path.join(folder, "scheduler_config.json")) as f:
            text = f.read()
    with open(os.path.join(OUT, name), "w") as f:
        f.write(text)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in CLASSES:
        cls = getattr(diffusers, name)
        save(cls(), f"{name}.json")
        accepted = cls().config.keys()
        save(cls(**{k: v for k, v in SD15.items() if k in accepted}), f"{name}-sd15.json")
    print(f"wrote {len(CLASSES) * 2} configs to {OUT} (diffusers {diffusers.__version__})")


if __name__ == "__main__":
    main()
