"""LoRA files in the layouts people download, and diffusers' images with them fused.

    python3 weights/make_lora_fixtures.py      # after make_fixtures.py (needs weights/fixtures/tiny-sd15)

Writes weights/fixtures/loras/*.safetensors (random low-rank updates for the tiny SD 1.5 model)
and weights/fixtures/lora-sd15.safetensors with, per case, the latents after every step and the
decoded image of StableDiffusionPipeline after `load_lora_weights` + `fuse_lora`:

  kohya.safetensors   kohya / AUTOMATIC1111 layout with diffusers block names: lora_unet_* (every
                      attention projection, proj_in/proj_out as 1x1 convs, the feed-forward, and
                      LoCon convolutions: a 3x3 resnet conv, a 1x1 shortcut, time_emb_proj) and
                      lora_te_* (attention and MLP of every CLIP layer), rank 4; .alpha 2 on
                      every UNet layer and 8 on every text-encoder layer (see make_kohya)
  sgm.safetensors     kohya layout with the original LDM block names (lora_unet_input_blocks_1_1_*,
                      middle_block_1, output_blocks_*), attention layers only. diffusers 0.42 maps
                      these names only for SDXL, so its reference is the same tensors under the
                      diffusers block names (kohya-attention, not kept) run through diffusers
  peft.safetensors    diffusers/PEFT layout as save_lora_weights writes it (unet.*.lora_A.weight /
                      lora_B.weight, text_encoder.*), rank 2, lora_alpha 4 in the file's metadata
  legacy.safetensors  the same tensors in diffusers' older spellings (*.lora.down.weight, text
                      encoder *.lora_linear_layer.down.weight), which carry no alpha (alpha = rank)

  kohya-sd2.safetensors  kohya layout for the tiny SD 2 model (linear proj_in/proj_out)

Cases (name: LoRAs and scales): kohya_0.7, peft_1, legacy_1, sgm_1, kohya_0.5+peft_1.2, and
sd2_kohya_1 on tiny-sd2 (not in the "cases" metadata: its model differs).
Every case: prompt "a red apple", negative "blurry", Euler, 3 steps, guidance 7.5, seed 7, 64x64.
"""

import json
import os
import re

import torch
import peft
import safetensors.torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

from recorded_runs import case_tensors, recorded_run, save_fixture

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "fixtures", "tiny-sd15")
SD2_MODEL = os.path.join(HERE, "fixtures", "tiny-sd2")
FOLDER = os.path.join(HERE, "fixtures", "loras")
OUT = os.path.join(HERE, "fixtures", "lora-sd15.safetensors")
PROMPT, NEGATIVE, SEED, STEPS = "a red apple", "blurry", 7, 3
CASES = {
    "kohya_0.7": [("kohya", 0.7)],
    "peft_1": [("peft", 1.0)],
    "legacy_1": [("legacy", 1.0)],
    "sgm_1": [("kohya-attention", 1.0)],
    "kohya_0.5+peft_1.2": [("kohya", 0.5), ("peft", 1.2)],
}


def load_pipe(model=MODEL):
    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def kohya_name(module):
    return module.replace(".", "_")


def low_rank(generator, out_features, in_shape, rank, conv_kernel=None):
    """down [rank, in, (k, k)], up [out, rank, (1, 1)], scaled so the update is visible but small."""
    in_features = in_shape
    if conv_kernel is None:
        down = torch.randn(rank, in_features, generator=generator) * 0.3
        up = torch.randn(out_features, rank, generator=generator) * 0.3
    else:
        down = torch.randn(rank, in_features, conv_kernel, conv_kernel, generator=generator) * 0.2
        up = torch.randn(out_features, rank, 1, 1, generator=generator) * 0.3
    return down, up


def make_kohya(pipe, generator):
    tensors = {}
    unet_modules = dict(pipe.unet.named_modules())
    rank = 4
    for name, module in unet_modules.items():
        is_attention = re.search(r"attn[12]\.(to_q|to_k|to_v|to_out\.0)$", name) or name.endswith(
            ("ff.net.0.proj", "ff.net.2"))
        is_projection = name.endswith(("proj_in", "proj_out"))
        locon = name in ("down_blocks.0.resnets.0.conv1", "down_blocks.0.resnets.0.time_emb_proj",
                         "up_blocks.0.resnets.0.conv_shortcut")
        if not (is_attention or is_projection or locon):
            continue
        key = "lora_unet_" + kohya_name(name)
        if isinstance(module, torch.nn.Conv2d):
            down, up = low_rank(generator, module.out_channels, module.in_channels, rank, module.kernel_size[0])
        else:
            down, up = low_rank(generator, module.out_features, module.in_features, rank)
        tensors[key + ".lora_down.weight"] = down
        tensors[key + ".lora_up.weight"] = up
        # Every layer carries its alpha, as kohya writes them, and one value for the whole UNet:
        # diffusers 0.42 gives a layer without an alpha the file's most common one (AUTOMATIC1111
        # and kohya give it the rank), and its per-layer alpha_pattern misses attention layers
        # (renamed `attn1.processor.to_q`), so only uniform alphas make a faithful reference.
        tensors[key + ".alpha"] = torch.tensor(2.0)
    for name, module in pipe.text_encoder.named_modules():
        if not re.search(r"(q_proj|k_proj|v_proj|out_proj|fc1|fc2)$", name):
            continue
        # kohya names carry transformers 4's `text_model.` level.
        key = "lora_te_" + kohya_name("text_model." + name if not name.startswith("text_model.") else name)
        down, up = low_rank(generator, module.out_features, module.in_features, rank)
        tensors[key + ".lora_down.weight"] = down
        tensors[key + ".lora_up.weight"] = up
        tensors[key + ".alpha"] = torch.tensor(8.0)
    return tensors


SGM_NAMES = {"down_blocks_0_attentions_0": "input_blocks_1_1", "mid_block_attentions_0": "middle_block_1",
             "up_blocks_1_attentions_0": "output_blocks_2_1", "up_blocks_1_attentions_1": "output_blocks_3_1"}


def attention_part(kohya):
    """The UNet attention layers of the kohya file (tiny UNet: attention in down block 0, the mid
    block and up block 1)."""
    return {k: v.clone() for k, v in kohya.items() if k.startswith("lora_unet_") and "attentions" in k}


def make_sgm(kohya):
    """The attention layers of the kohya file under the original LDM block names."""
    tensors = {}
    for key, value in attention_part(kohya).items():
        for old, new in SGM_NAMES.items():
            if key.startswith("lora_unet_" + old + "_"):
                tensors[key.replace(old, new, 1)] = value
    assert len(tensors) == len(attention_part(kohya))
    return tensors


def make_peft(generator):
    pipe = load_pipe()
    unet_config = peft.LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                  target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    text_config = peft.LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                  target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    pipe.unet.add_adapter(unet_config)
    # transformers 5.24's own add_adapter wants peft >= 0.22, newer than PyPI has; inject directly.
    peft.inject_adapter_in_model(text_config, pipe.text_encoder)
    with torch.no_grad():
        for module in (pipe.unet, pipe.text_encoder):
            for name, parameter in module.named_parameters():
                if "lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    folder = os.path.join(FOLDER, "peft-save")
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=peft.get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=peft.get_peft_model_state_dict(pipe.text_encoder),
        unet_lora_adapter_metadata=unet_config.to_dict(),
        text_encoder_lora_adapter_metadata=text_config.to_dict(), safe_serialization=True)
    path = os.path.join(folder, "pytorch_lora_weights.safetensors")
    os.replace(path, os.path.join(FOLDER, "peft.safetensors"))
    os.rmdir(folder)


def make_legacy():
    with safetensors.safe_open(os.path.join(FOLDER, "peft.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    legacy = {}
    for key, value in tensors.items():
        spelling = ".lora_linear_layer." if key.startswith("text_encoder.") else ".lora."
        key = key.replace(".lora_A.", spelling + "down.").replace(".lora_B.", spelling + "up.")
        legacy[key] = value
    # These older files carry no alphas (diffusers refuses keys without "lora"): alpha = rank.
    return legacy


def save(tensors, name):
    safetensors.torch.save_file({k: v.contiguous() for k, v in sorted(tensors.items())},
                                os.path.join(FOLDER, name), metadata={"format": "pt"})


def run(case, loras, model=MODEL):
    pipe = load_pipe(model)
    names = []
    for index, (lora, _) in enumerate(loras):
        pipe.load_lora_weights(os.path.join(FOLDER, f"{lora}.safetensors"), adapter_name=f"a{index}")
        names.append(f"a{index}")
    if names:
        pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()
    steps, image = recorded_run(pipe, SEED, prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS,
                                guidance_scale=7.5)
    return case_tensors(case, steps, image)


def main():
    torch.set_num_threads(1)
    os.makedirs(FOLDER, exist_ok=True)
    generator = torch.Generator("cpu").manual_seed(1234)
    kohya = make_kohya(load_pipe(), generator)
    save(kohya, "kohya.safetensors")
    save(make_sgm(kohya), "sgm.safetensors")
    save(attention_part(kohya), "kohya-attention.safetensors")
    make_peft(generator)
    save(make_legacy(), "legacy.safetensors")
    tensors = {}
    base = run("base", [])
    for case, loras in CASES.items():
        result = run(case, loras)
        difference = float((result[f"{case}.image"] - base["base.image"]).abs().max())
        print(case, "max |image - base image|", difference)
        assert difference > 1e-2, f"{case}: the LoRA changed nothing"
        tensors.update(result)
    tensors.update(base)
    os.remove(os.path.join(FOLDER, "kohya-attention.safetensors"))
    # SD 2.x (linear proj_in/proj_out, v-prediction): a kohya file made for the tiny SD 2 model.
    save(make_kohya(load_pipe(SD2_MODEL), generator), "kohya-sd2.safetensors")
    tensors.update(run("sd2_kohya_1", [("kohya-sd2", 1.0)], SD2_MODEL))
    cases = {case: [["sgm" if lora == "kohya-attention" else lora, scale] for lora, scale in loras]
             for case, loras in CASES.items()}
    save_fixture(tensors, OUT, "python3 weights/make_lora_fixtures.py", peft=peft.__version__,
                 cases=json.dumps(cases), prompt=PROMPT, negative_prompt=NEGATIVE, seed=str(SEED),
                 steps=str(STEPS))


if __name__ == "__main__":
    main()
