"""Reference runs of diffusers' StableDiffusionInpaintPipeline on the tiny fixture models.

Regenerate (after make_fixtures.py has written weights/fixtures/tiny-sd15):

    python3 weights/make_inpaint_fixtures.py

Writes:
  weights/fixtures/tiny-sd15-inpaint/   tiny-sd15 with an inpainting UNet (in_channels 9: latents,
                                        mask, masked-image latents; conv_in re-drawn, seed 1003);
                                        its other parts link to tiny-sd15's
  weights/fixtures/inpaint/image.png    the 64x64 RGB image to repaint
  weights/fixtures/inpaint/mask.png     its 64x64 grayscale mask: white = repaint; includes the
                                        grey levels 127 (kept: 127/255 < 0.5) and 128 (repainted)
  weights/fixtures/inpaint-sd15.safetensors, for each case of CASES, float32:
    <case>.latents.<i>   [1, 4, 8, 8]    latents after step i (after the 4-channel blend)
    <case>.image         [1, 3, 64, 64]  vae.decode(latents / scaling_factor)
  The web UIs' "only masked" mode (diffusers' `padding_mask_crop`), on a 128x96 image whose
  mask covers a small region (inpaint/large-image.png, inpaint/large-mask.png), per case of
  ONLY_MASKED:
    <case>.latents.<i>   [1, 4, 8, 8]     the 64x64 crop's latents after step i
    <case>.final         [96, 128, 3]     the PIL image diffusers returns (the crop pasted back)
  PIL's Lanczos resampling, which that mode resizes with:
    resize.<w>x<h>       [h, w, 3]        inpaint/large-image.png resized by PIL
    resize.mask.<w>x<h>  [h, w]           inpaint/large-mask.png (mode L) resized by PIL
    resize.edge.<w>x<h>  [h, w, 3]        `image.resize((w, h), box=(0, 0, 128, 0))`, the zero-height
                                          box `_resize_and_fill` fills borders with
The settings of every case are in the metadata (JSON under "cases").
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from diffusers import (EulerAncestralDiscreteScheduler, PNDMScheduler, DDIMScheduler,
                       StableDiffusionInpaintPipeline, UNet2DConditionModel)
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import rerandomize  # noqa: E402
from recorded_runs import case_tensors, recorded_run, save_fixture  # noqa: E402

BASE = "weights/fixtures/tiny-sd15"
INPAINT = "weights/fixtures/tiny-sd15-inpaint"
IMAGES = "weights/fixtures/inpaint"
OUT = "weights/fixtures/inpaint-sd15.safetensors"
PROMPT = "a red apple on a wooden table"
NEGATIVE = "green tones"
SEED = 42
STEPS = 4
UNET_SEED = 1003

SCHEDULERS = {"pndm": PNDMScheduler, "euler_a": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler}
# name -> (model, scheduler, negative prompt, strength)
CASES = {
    "plain_pndm": (BASE, "pndm", NEGATIVE, 1.0),
    "plain_euler_a_strength": (BASE, "euler_a", NEGATIVE, 0.75),
    "inpaint_pndm": (INPAINT, "pndm", NEGATIVE, 1.0),
    "inpaint_euler_a": (INPAINT, "euler_a", NEGATIVE, 1.0),
    "inpaint_ddim_strength": (INPAINT, "ddim", None, 0.6),
}


# name -> (model, scheduler, negative prompt, padding)
ONLY_MASKED = {
    "only_masked_plain": (BASE, "pndm", NEGATIVE, 8),
    "only_masked_inpaint": (INPAINT, "euler_a", NEGATIVE, 4),
}
RESIZES = [(64, 64), (50, 37), (200, 150), (64, 48)]


def large_image_and_mask():
    y, x = np.mgrid[0:96, 0:128]
    rgb = (np.stack([x * 2 + y, y * 3, (x * y) // 7], axis=-1) % 256).astype(np.uint8)
    mask = np.zeros((96, 128), dtype=np.uint8)
    mask[40:62, 70:100] = 255
    mask[60:64, 66:72] = 200
    return rgb, mask


def image_and_mask():
    y, x = np.mgrid[0:64, 0:64]
    rgb = (np.stack([x * 4, y * 4, (x + y) * 2], axis=-1) % 256).astype(np.uint8)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:44, 20:52] = 255
    mask[0:8, 0:8] = 127
    mask[0:8, 56:64] = 128
    return rgb, mask


def write_inpainting_model():
    """tiny-sd15 with a 9-channel UNet: the 4-channel weights, conv_in re-drawn for 9 inputs."""
    if os.path.exists(INPAINT):
        shutil.rmtree(INPAINT)
    # The parts it shares with tiny-sd15 are links, not copies (the fixtures stay small).
    os.makedirs(INPAINT)
    for part in ("text_encoder", "tokenizer", "vae", "scheduler"):
        os.symlink(f"../tiny-sd15/{part}", f"{INPAINT}/{part}")
    shutil.copy(f"{BASE}/model_index.json", f"{INPAINT}/model_index.json")
    base = UNet2DConditionModel.from_pretrained(f"{BASE}/unet")
    config = dict(base.config)
    config["in_channels"] = 9
    unet = UNet2DConditionModel.from_config(config)
    state = base.state_dict()
    conv = rerandomize(torch.nn.Conv2d(9, config["block_out_channels"][0], 3, padding=1), UNET_SEED)
    state["conv_in.weight"] = conv.weight.detach()
    state["conv_in.bias"] = conv.bias.detach()
    unet.load_state_dict(state)
    unet.save_pretrained(f"{INPAINT}/unet")
    with open(f"{INPAINT}/model_index.json") as f:
        index = json.load(f)
    index["_class_name"] = "StableDiffusionInpaintPipeline"
    with open(f"{INPAINT}/model_index.json", "w") as f:
        json.dump(index, f, indent=2)


def main():
    torch.set_num_threads(1)
    write_inpainting_model()
    rgb, mask = image_and_mask()
    os.makedirs(IMAGES, exist_ok=True)
    Image.fromarray(rgb).save(f"{IMAGES}/image.png")
    Image.fromarray(mask, mode="L").save(f"{IMAGES}/mask.png")
    tensors = {}
    settings = {}
    pipes = {}
    for case, (model, scheduler, negative, strength) in CASES.items():
        if model not in pipes:
            pipes[model] = StableDiffusionInpaintPipeline.from_pretrained(
                model, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
        pipe = pipes[model]
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
        steps, image = recorded_run(
            pipe, SEED, prompt=PROMPT, negative_prompt=negative, num_inference_steps=STEPS,
            guidance_scale=7.5, image=Image.fromarray(rgb), mask_image=Image.fromarray(mask, mode="L"),
            strength=strength, height=64, width=64)
        tensors.update(case_tensors(case, steps, image))
        settings[case] = {"model": os.path.basename(model), "sampler": scheduler, "negative": negative,
                          "strength": strength, "steps": STEPS, "seed": SEED, "prompt": PROMPT}
    rgb, mask = large_image_and_mask()
    Image.fromarray(rgb).save(f"{IMAGES}/large-image.png")
    Image.fromarray(mask, mode="L").save(f"{IMAGES}/large-mask.png")
    image, mask_image = Image.fromarray(rgb), Image.fromarray(mask, mode="L")
    for w, h in RESIZES:
        tensors[f"resize.{w}x{h}"] = torch.from_numpy(
            np.array(image.resize((w, h), resample=Image.LANCZOS)).astype(np.float32))
        tensors[f"resize.mask.{w}x{h}"] = torch.from_numpy(
            np.array(mask_image.resize((w, h), resample=Image.LANCZOS)).astype(np.float32))
        tensors[f"resize.edge.{w}x{h}"] = torch.from_numpy(np.array(
            image.resize((w, h), resample=Image.LANCZOS, box=(0, 0, 128, 0))).astype(np.float32))
    for case, (model, scheduler, negative, padding) in ONLY_MASKED.items():
        pipe = pipes[model]
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
        steps = []

        def on_step(pipeline, i, t, step_kwargs):
            steps.append(step_kwargs["latents"].detach().clone())
            return step_kwargs

        with torch.no_grad():
            final = pipe(prompt=PROMPT, negative_prompt=negative, num_inference_steps=STEPS,
                         guidance_scale=7.5, image=image, mask_image=mask_image, height=64, width=64,
                         padding_mask_crop=padding, generator=torch.Generator("cpu").manual_seed(SEED),
                         callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"]
                         ).images[0]
        tensors.update({f"{case}.latents.{i}": step for i, step in enumerate(steps)})
        tensors[f"{case}.final"] = torch.from_numpy(np.array(final).astype(np.float32))
        settings[case] = {"model": os.path.basename(model), "sampler": scheduler, "negative": negative,
                          "padding": padding, "steps": STEPS, "seed": SEED, "prompt": PROMPT,
                          "crop": list(pipe.mask_processor.get_crop_region(mask_image, 64, 64, pad=padding))}
    save_fixture(tensors, OUT, "python3 weights/make_inpaint_fixtures.py", cases=json.dumps(settings))


if __name__ == "__main__":
    main()
