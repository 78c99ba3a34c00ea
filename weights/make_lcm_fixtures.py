"""Full LCM checkpoints (a UNet with `time_cond_proj_dim`: the guidance scale as an input)
against diffusers' LatentConsistencyModelPipeline on the tiny fixture model.

Regenerate (after make_fixtures.py has written weights/fixtures/tiny-sd15):

    python3 weights/make_lcm_fixtures.py

Writes:
  weights/fixtures/tiny-lcm/          tiny-sd15 with an LCM UNet (time_cond_proj_dim 32: the
                                      tiny-sd15 UNet's weights plus time_embedding.cond_proj,
                                      seed 1004) and an LCMScheduler; text encoder, tokenizer
                                      and VAE link to tiny-sd15's
  weights/fixtures/lcm-sd15.safetensors, per case of CASES, float32:
    <case>.latents.<i>   [1, 4, 8, 8]    latents after step i
    <case>.image         [1, 3, 64, 64]  vae.decode(latents / scaling_factor)
    guidance_embedding   [2, 32]         get_guidance_scale_embedding of w = 7.5 and w = 1
Prompt "a red apple on a wooden table", seed 42, 64x64. The NAG case runs our NAG attention
processor (make_nag_fixtures.py) inside the LCM pipeline, which has no negative prompt itself.
"""

import json
import os
import shutil
import sys

import diffusers
import torch
from diffusers import LatentConsistencyModelPipeline, LCMScheduler, UNet2DConditionModel

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import rerandomize  # noqa: E402
from make_nag_fixtures import NAGProcessor  # noqa: E402
from recorded_runs import case_tensors, recorded_run, save_fixture  # noqa: E402

BASE = "weights/fixtures/tiny-sd15"
LCM = "weights/fixtures/tiny-lcm"
OUT = "weights/fixtures/lcm-sd15.safetensors"
PROMPT = "a red apple on a wooden table"
SEED = 42
CONDITION_DIM = 32
# name -> (steps, guidance scale, NAG negative or None)
CASES = {"lcm_4": (4, 8.5, None), "lcm_1": (1, 8.5, None), "lcm_scale_2": (3, 2.0, None),
         "lcm_nag": (4, 8.5, "blurry")}


def write_lcm_model():
    if os.path.exists(LCM):
        shutil.rmtree(LCM)
    os.makedirs(LCM)
    for part in ("text_encoder", "tokenizer", "vae"):
        os.symlink(f"../tiny-sd15/{part}", f"{LCM}/{part}")
    base = UNet2DConditionModel.from_pretrained(f"{BASE}/unet")
    config = dict(base.config)
    config["time_cond_proj_dim"] = CONDITION_DIM
    unet = UNet2DConditionModel.from_config(config)
    state = base.state_dict()
    projection = rerandomize(torch.nn.Linear(CONDITION_DIM, config["block_out_channels"][0], bias=False), 1004)
    state["time_embedding.cond_proj.weight"] = projection.weight.detach()
    unet.load_state_dict(state)
    unet.save_pretrained(f"{LCM}/unet")
    LCMScheduler.from_pretrained(f"{BASE}/scheduler").save_pretrained(f"{LCM}/scheduler")
    with open(f"{BASE}/model_index.json") as f:
        index = json.load(f)
    index["_class_name"] = "LatentConsistencyModelPipeline"
    index["scheduler"] = ["diffusers", "LCMScheduler"]
    with open(f"{LCM}/model_index.json", "w") as f:
        json.dump(index, f, indent=2)


def main():
    torch.set_num_threads(1)
    write_lcm_model()
    pipe = LatentConsistencyModelPipeline.from_pretrained(LCM, torch_dtype=torch.float32, safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    tensors = {"guidance_embedding": pipe.get_guidance_scale_embedding(torch.tensor([7.5, 1.0]), CONDITION_DIM)}
    settings = {}
    for case, (steps, scale, negative) in CASES.items():
        state = None
        if negative is not None:
            with torch.no_grad():
                embeds = pipe.encode_prompt(negative, "cpu", 1, False)[0]
            state = dict(step=0, phi=5.0, tau=2.5, alpha=0.25, steps=None, negatives=[embeds], weights=[1.0])
            pipe.unet.set_attn_processor({name: NAGProcessor(state) if name.endswith("attn2.processor")
                                          else diffusers.models.attention_processor.AttnProcessor2_0()
                                          for name in pipe.unet.attn_processors})
        else:
            pipe.unet.set_attn_processor(diffusers.models.attention_processor.AttnProcessor2_0())
        latents_after, image = recorded_run(
            pipe, SEED, after_step=(lambda i: state.update(step=i + 1)) if state else None, prompt=PROMPT,
            num_inference_steps=steps, guidance_scale=scale)
        tensors.update(case_tensors(case, latents_after, image))
        settings[case] = dict(steps=steps, guidance_scale=scale, nag_negative=negative)
        print(case, "image range", float(image.min()), float(image.max()))
    save_fixture(tensors, OUT, "python3 weights/make_lcm_fixtures.py", cases=json.dumps(settings),
                 prompt=PROMPT, seed=str(SEED))


if __name__ == "__main__":
    main()
