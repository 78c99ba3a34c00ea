#!/usr/bin/env python3
"""A tiny SDXL model and reference activations of diffusers' StableDiffusionXLPipeline.

Regenerate (from the repo root, after make_fixtures.py has written weights/fixtures/tiny-sd15
and tiny-sd2, whose tokenizers the new folder links to):

    python3 weights/make_sdxl_fixtures.py
    python3 weights/make_sdxl_fixtures.py --only clip,unet     # parts: model, clip, unet, pipeline, vae

`clip`, `unet`, `pipeline` and `vae` load the folder written by `model` from disk, so the
references use exactly the weights on disk (F16 values upcast to F32 where the folder is F16).

Writes:
  weights/fixtures/tiny-sdxl/   StableDiffusionXLPipeline folder (force_zeros_for_empty_prompt true),
                                every parameter re-drawn by make_fixtures.rerandomize:
      unet/          UNet2DConditionModel as UNET_CFG (blocks 32/64/64, 2 layers, transformer layers
                     1/2/3, heads 2/4/4, text_time add embedding, cross dim 64), seed 3002, saved F16
      text_encoder/  CLIPTextModel, hidden 32, 3 layers, 4 heads, quick_gelu, seed 3000, saved F16
      text_encoder_2/ CLIPTextModelWithProjection, hidden 32, 3 layers, 4 heads, gelu,
                     projection_dim 32, seed 3001, saved F16
      tokenizer/     -> ../tiny-sd15/tokenizer (pads with <|endoftext|> = 49407)
      tokenizer_2/   -> ../tiny-sd2/tokenizer (pads with "!" = 0, as SDXL's tokenizer_2)
      vae/           AutoencoderKL, tiny-sd15's config with scaling_factor 0.13025, force_upcast
                     true, seed 3003, saved F16
      scheduler/     EulerDiscreteScheduler, SDXL base 1.0's scheduler_config.json
  weights/fixtures/clip-sdxl.safetensors, for prompt i of PROMPTS:
    prompt<i>.ids                   [77]          tokenizer ids (padding max_length), as float
    prompt<i>.ids_2                 [77]          tokenizer_2 ids
    prompt<i>.te1.hidden.<L>        [1, 77, 32]   text_encoder hidden_states, L = 0..3
    prompt<i>.te2.hidden.<L>        [1, 77, 32]   text_encoder_2 hidden_states, L = 0..3
    prompt<i>.te2.last_hidden_state [1, 77, 32]   after final_layer_norm
    prompt<i>.te2.text_embeds       [1, 32]       text_projection(pooled EOS state)
    prompt<i>.prompt_embeds         [1, 77, 64]   encode_prompt(..., do_classifier_free_guidance=False)[0]
    prompt<i>.pooled                [1, 32]       encode_prompt(...)[2]
    prompt2.clip_skip1.prompt_embeds [1, 77, 64]  the same with clip_skip=1
  weights/fixtures/unet-sdxl.safetensors (seed 10), for case0 (b = 2) and case1 (b = 1):
    <case>.sample [b, 4, 8, 8], <case>.timesteps [b], <case>.encoder_hidden_states [b, 77, 64],
    <case>.text_embeds [b, 32], <case>.time_ids [b, 6], <case>.out [b, 4, 8, 8], and forward-hook
    outputs <case>.time_embedding [b, 128], <case>.add_time_proj [6b, 8], <case>.add_embedding
    [b, 128], <case>.conv_in [b, 32, 8, 8], <case>.down_blocks.{0,1,2} [b, 32, 4, 4] / [b, 64, 2, 2]
    / [b, 64, 2, 2], <case>.mid_block [b, 64, 2, 2], <case>.up_blocks.{0,1,2} [b, 64, 4, 4] /
    [b, 64, 8, 8] / [b, 32, 8, 8], <case>.conv_out [b, 4, 8, 8]
  weights/fixtures/pipeline-sdxl.safetensors, per case of CASES (prompt PROMPT, seed 42, 64x64):
    <case>.latents.<i>          [1, 4, 8, 8]   latents after step i
    <case>.image                [1, 3, 64, 64] vae.decode(latents / scaling_factor)
    <case>.step0.sample         [r, 4, 8, 8]   what the pipeline passed to the UNet at step 0
    <case>.step0.timestep       [1]            (r = 2 with CFG: [negative, positive]; else 1)
    <case>.step0.prompt_embeds  [r, 77, 64]
    <case>.step0.text_embeds    [r, 32]
    <case>.step0.time_ids       [r, 6]
  weights/fixtures/vae-sdxl.safetensors (seed 20):
    decode.latents [1, 4, 8, 8] (randn, passed to vae.decode as is), decode.conv_in [1, 64, 8, 8],
    decode.mid_block [1, 64, 8, 8], decode.image = decode.out [1, 3, 64, 64];
    encode.image [1, 3, 64, 64] (uniform in [-1, 1)), encode.mid_block [1, 64, 8, 8],
    encode.mean, encode.logvar, encode.noise, encode.sample [1, 4, 8, 8]
All reference tensors are float32; settings are JSON in the metadata.
"""
import json
import os
import shutil
import sys

import torch

import diffusers
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import (TEXT_COMMON, VAE_CFG, check_tokenizer, encode_reference,  # noqa: E402
                           hooks, rerandomize, run_parts, save_file)
from recorded_runs import case_tensors, recorded_run  # noqa: E402

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
SDXL_DIR = os.path.join(OUT, "tiny-sdxl")
COMMAND = "python3 weights/make_sdxl_fixtures.py"

SEEDS = {"text_encoder": 3000, "text_encoder_2": 3001, "unet": 3002, "vae": 3003}

TEXT_CFG = dict(TEXT_COMMON, num_hidden_layers=3, hidden_act="quick_gelu")     # ViT-L like
TEXT_2_CFG = dict(TEXT_COMMON, num_hidden_layers=3, hidden_act="gelu")         # bigG like
UNET_CFG = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=[32, 64, 64], layers_per_block=2,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    attention_head_dim=[2, 4, 4],          # a head COUNT per block (diffusers' legacy name)
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    transformer_layers_per_block=[1, 2, 3],
    projection_class_embeddings_input_dim=32 + 6 * 8,   # text_encoder_2 projection + 6 time ids x 8
    cross_attention_dim=64,                # 32 (text_encoder) + 32 (text_encoder_2)
    norm_num_groups=32,
)
SDXL_VAE_CFG = dict(VAE_CFG, scaling_factor=0.13025, force_upcast=True)
# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SDXL_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}

PROMPTS = ["", "a photo of a cat", "a red apple on a wooden table, green tones, highly detailed"]

PROMPT = "a red apple on a wooden table"
SEED = 42
NEG = "green tones"
# name -> pipeline arguments besides prompt/seed/size; "scheduler" picks the sampler
CASES = {
    "no_negative": dict(guidance_scale=5.0, num_inference_steps=3),
    "negative": dict(negative_prompt=NEG, guidance_scale=5.0, num_inference_steps=3),
    "empty_negative": dict(negative_prompt="", guidance_scale=5.0, num_inference_steps=3),
    "micro": dict(negative_prompt=NEG, guidance_scale=5.0, num_inference_steps=3,
                  original_size=(128, 96), crops_coords_top_left=(8, 4), target_size=(64, 64),
                  negative_original_size=(32, 32), negative_crops_coords_top_left=(0, 0),
                  negative_target_size=(64, 64)),
    "euler_a": dict(scheduler="euler_a", negative_prompt="blurry", guidance_scale=5.0, num_inference_steps=4),
    "dpm_karras": dict(scheduler="dpm_karras", negative_prompt=NEG, guidance_scale=5.0, num_inference_steps=4),
    "guidance_1": dict(guidance_scale=1.0, num_inference_steps=2),
    "clip_skip": dict(clip_skip=1, negative_prompt=NEG, guidance_scale=5.0, num_inference_steps=2),
    "negative_2": dict(prompt_2="oil painting", negative_prompt=NEG, negative_prompt_2="blurry",
                       guidance_scale=5.0, num_inference_steps=3),
}


def metadata(seed, **extra):
    md = {"command": COMMAND, "torch": torch.__version__, "diffusers": diffusers.__version__,
          "transformers": transformers.__version__, "seed": str(seed)}
    for k, v in extra.items():
        md[k] = v if isinstance(v, str) else json.dumps(v)
    return md


def write(name, tensors, seed, **extra):
    out = {k: (v if torch.is_tensor(v) else torch.tensor(v)).detach().to(torch.float32).contiguous().clone()
           for k, v in tensors.items()}
    path = os.path.join(OUT, name)
    save_file(out, path, metadata=metadata(seed, **extra))
    print(f"wrote {path}: {len(out)} tensors, {os.path.getsize(path) / 1e6:.3f} MB")
    return path


def stamp_safetensors(path, seed, **extra):
    """Rewrite a save_pretrained safetensors file deterministically with our metadata (same tensors)."""
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        old = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    md = dict(old)
    md.update(metadata(seed, **extra))
    save_file(tensors, path, metadata=md)


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------

def part_model():
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer)
    for dep in ("tiny-sd15/tokenizer", "tiny-sd2/tokenizer"):
        if not os.path.isdir(os.path.join(OUT, dep)):
            sys.exit(f"weights/fixtures/{dep} missing: run python3 weights/make_fixtures.py --only models")
    if os.path.isdir(SDXL_DIR):
        shutil.rmtree(SDXL_DIR)

    s = SEEDS["text_encoder"]
    torch.manual_seed(s)
    te = rerandomize(CLIPTextModel(CLIPTextConfig(**TEXT_CFG)), s).eval().half()
    s = SEEDS["text_encoder_2"]
    torch.manual_seed(s)
    te2 = rerandomize(CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_2_CFG)), s).eval().half()
    s = SEEDS["unet"]
    torch.manual_seed(s)
    unet = rerandomize(UNet2DConditionModel(**UNET_CFG), s).eval().half()
    s = SEEDS["vae"]
    torch.manual_seed(s)
    vae = rerandomize(AutoencoderKL(**SDXL_VAE_CFG), s).eval().half()
    sched = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)

    tok = CLIPTokenizer.from_pretrained(os.path.join(OUT, "tiny-sd15/tokenizer"))
    tok2 = CLIPTokenizer.from_pretrained(os.path.join(OUT, "tiny-sd2/tokenizer"))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok,
                                     tokenizer_2=tok2, unet=unet, scheduler=sched,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.save_pretrained(SDXL_DIR, safe_serialization=True)
    # The tokenizers are tiny-sd15's and tiny-sd2's files: links, not copies (1.5 MB each).
    for part, target in (("tokenizer", "../tiny-sd15/tokenizer"), ("tokenizer_2", "../tiny-sd2/tokenizer")):
        shutil.rmtree(os.path.join(SDXL_DIR, part))
        os.symlink(target, os.path.join(SDXL_DIR, part))
    check_tokenizer(os.path.join(SDXL_DIR, "tokenizer"), 49407)
    check_tokenizer(os.path.join(SDXL_DIR, "tokenizer_2"), 0)
    for root, _, files in os.walk(SDXL_DIR):
        for fn in files:
            if fn.endswith(".safetensors"):
                comp = os.path.basename(root)
                stamp_safetensors(os.path.join(root, fn), SEEDS[comp], component=comp, model="tiny-sdxl")
    with open(os.path.join(SDXL_DIR, "model_index.json")) as f:
        index = json.load(f)
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    p2 = load_pipe()
    assert p2.unet.add_embedding.linear_1.in_features == 80
    print(f"pipeline ok: {SDXL_DIR} ({type(p2.scheduler).__name__}); folder "
          f"{sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(SDXL_DIR) for f in fs) / 1e6:.2f} MB"
          " without the linked tokenizers")


def load_pipe():
    from diffusers import StableDiffusionXLPipeline
    if not os.path.isdir(SDXL_DIR):
        sys.exit(f"{SDXL_DIR} missing: run --only model first")
    pipe = StableDiffusionXLPipeline.from_pretrained(SDXL_DIR, torch_dtype=torch.float32, add_watermarker=False)
    for m in (pipe.text_encoder, pipe.text_encoder_2, pipe.unet, pipe.vae):
        m.eval()
        assert m.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------
# text encoders
# ---------------------------------------------------------------------------

def part_clip():
    pipe = load_pipe()
    t = {}
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):
            for tok, te, key in ((pipe.tokenizer, pipe.text_encoder, "te1"),
                                 (pipe.tokenizer_2, pipe.text_encoder_2, "te2")):
                ids = tok(p, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
                out = te(ids, output_hidden_states=True)
                t[f"prompt{i}.ids" if key == "te1" else f"prompt{i}.ids_2"] = ids[0].float()
                assert len(out.hidden_states) == te.config.num_hidden_layers + 1
                for L, h in enumerate(out.hidden_states):
                    t[f"prompt{i}.{key}.hidden.{L}"] = h
                if key == "te2":
                    t[f"prompt{i}.te2.last_hidden_state"] = out.last_hidden_state
                    t[f"prompt{i}.te2.text_embeds"] = out.text_embeds
                    # pooled = last_hidden_state at argmax(ids) (eos_token_id 2 in the config: the legacy rule)
                    pooled = out.last_hidden_state[0, int(ids[0].argmax())]
                    assert torch.allclose(te.text_projection(pooled), out.text_embeds[0], atol=1e-6)
            embeds, _, pooled, _ = pipe.encode_prompt(p, device="cpu", num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)
            assert torch.equal(embeds, torch.cat([t[f"prompt{i}.te1.hidden.2"], t[f"prompt{i}.te2.hidden.2"]], -1))
            assert torch.equal(pooled, t[f"prompt{i}.te2.text_embeds"])
            t[f"prompt{i}.prompt_embeds"] = embeds
            t[f"prompt{i}.pooled"] = pooled
        embeds = pipe.encode_prompt(PROMPTS[2], device="cpu", num_images_per_prompt=1,
                                    do_classifier_free_guidance=False, clip_skip=1)[0]
        assert torch.equal(embeds, torch.cat([t["prompt2.te1.hidden.1"], t["prompt2.te2.hidden.1"]], -1))
        t["prompt2.clip_skip1.prompt_embeds"] = embeds
    write("clip-sdxl.safetensors", t, "n/a (model weights: see tiny-sdxl)", prompts=PROMPTS,
          num_layers=pipe.text_encoder.config.num_hidden_layers,
          attn_implementation=str(pipe.text_encoder.config._attn_implementation))


# ---------------------------------------------------------------------------
# UNet
# ---------------------------------------------------------------------------

def part_unet():
    pipe = load_pipe()
    unet = pipe.unet
    seed = 10
    torch.manual_seed(seed)
    t = {}
    cases = [("case0", [999.0, 500.0], [[64, 64, 0, 0, 64, 64], [128, 96, 8, 4, 64, 64]]),
             ("case1", [10.0], [[1024, 1024, 0, 0, 1024, 1024]])]
    for case, ts, time_ids in cases:
        b = len(ts)
        sample = torch.randn(b, 4, 8, 8)
        ehs = torch.randn(b, 77, 64)
        text_embeds = torch.randn(b, 32)
        timesteps = torch.tensor(ts, dtype=torch.float32)
        time_ids = torch.tensor(time_ids, dtype=torch.float32)
        mods = [("time_embedding", unet.time_embedding), ("add_time_proj", unet.add_time_proj),
                ("add_embedding", unet.add_embedding), ("conv_in", unet.conv_in)]
        mods += [(f"down_blocks.{i}", blk) for i, blk in enumerate(unet.down_blocks)]
        mods += [("mid_block", unet.mid_block)]
        mods += [(f"up_blocks.{i}", blk) for i, blk in enumerate(unet.up_blocks)]
        mods += [("conv_out", unet.conv_out)]
        store = {}
        hs = hooks(mods, store, case)
        with torch.no_grad():
            out = unet(sample, timesteps, encoder_hidden_states=ehs,
                       added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}, return_dict=False)[0]
        for h in hs:
            h.remove()
        assert torch.equal(out, store[f"{case}.conv_out"])
        t.update({f"{case}.sample": sample, f"{case}.timesteps": timesteps, f"{case}.encoder_hidden_states": ehs,
                  f"{case}.text_embeds": text_embeds, f"{case}.time_ids": time_ids, f"{case}.out": out})
        t.update(store)
        print(case, {k.split(".", 1)[1]: f"{float(v.abs().max()):.3g}" for k, v in store.items()})
    write("unet-sdxl.safetensors", t, seed, cases=json.dumps({c[0]: {"timesteps": c[1], "time_ids": c[2]}
                                                               for c in cases}))


# ---------------------------------------------------------------------------
# pipeline runs
# ---------------------------------------------------------------------------

def part_pipeline():
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
    pipe = load_pipe()
    base_config = dict(pipe.scheduler.config)  # the folder's scheduler_config.json
    # sampler -> (class, overrides of the folder's config)
    schedulers = {
        "euler": (EulerDiscreteScheduler, {}),
        "euler_a": (EulerAncestralDiscreteScheduler, {}),
        "dpm_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    }
    tensors, settings = {}, {}
    for case, args in CASES.items():
        args = dict(args)
        sampler = args.pop("scheduler", "euler")
        cls, overrides = schedulers[sampler]
        pipe.scheduler = cls.from_config(base_config, **overrides)
        step0 = {}

        def pre_hook(module, hook_args, kwargs, step0=step0):
            if step0:
                return
            step0["sample"] = hook_args[0].detach().clone()
            step0["timestep"] = torch.as_tensor(hook_args[1]).reshape(1).float()
            step0["prompt_embeds"] = kwargs["encoder_hidden_states"].detach().clone()
            step0["text_embeds"] = kwargs["added_cond_kwargs"]["text_embeds"].detach().clone()
            step0["time_ids"] = kwargs["added_cond_kwargs"]["time_ids"].detach().clone()

        handle = pipe.unet.register_forward_pre_hook(pre_hook, with_kwargs=True)
        steps, image = recorded_run(pipe, SEED, prompt=PROMPT, **args)
        handle.remove()
        tensors.update(case_tensors(case, steps, image))
        tensors.update({f"{case}.step0.{k}": v for k, v in step0.items()})
        settings[case] = dict(sampler=sampler, scheduler=cls.__name__, scheduler_overrides=overrides,
                              timesteps=[float(x) for x in pipe.scheduler.timesteps],
                              prompt=PROMPT, seed=SEED, height=64, width=64,
                              **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()})
        assert torch.isfinite(image).all() and float(image.std()) > 1e-3
        print(f"{case}: {len(steps)} steps, image [{float(image.min()):.3f}, {float(image.max()):.3f}] "
              f"std {float(image.std()):.3f}; step0 time_ids {step0['time_ids'].tolist()}")
    # force_zeros_for_empty_prompt: no negative prompt -> zero negative embeddings and pooled
    assert torch.equal(tensors["no_negative.step0.prompt_embeds"][0], torch.zeros(77, 64))
    assert torch.equal(tensors["no_negative.step0.text_embeds"][0], torch.zeros(32))
    assert not torch.equal(tensors["empty_negative.step0.text_embeds"][0], torch.zeros(32))
    write("pipeline-sdxl.safetensors", tensors, SEED, cases=settings, prompt=PROMPT,
          decode="vae.decode(latents / vae.config.scaling_factor) (latents_mean/std are null)")


# ---------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------

def part_vae():
    pipe = load_pipe()
    vae = pipe.vae
    seed = 20
    torch.manual_seed(seed)
    t = {}
    latents = torch.randn(1, 4, 8, 8)
    store = {}
    hs = hooks([("conv_in", vae.decoder.conv_in), ("mid_block", vae.decoder.mid_block)], store, "decode")
    with torch.no_grad():
        out = vae.decode(latents, return_dict=False)[0]
    for h in hs:
        h.remove()
    t["decode.latents"] = latents
    t.update(store)
    t["decode.image"] = out
    t["decode.out"] = out  # the name vae.safetensors uses

    encode_reference(vae, t)
    write("vae-sdxl.safetensors", t, seed, scaling_factor=str(vae.config.scaling_factor),
          force_upcast=str(vae.config.force_upcast))


PARTS = {"model": part_model, "clip": part_clip, "unet": part_unet, "pipeline": part_pipeline, "vae": part_vae}


def main():
    run_parts(PARTS, SDXL_DIR)


if __name__ == "__main__":
    main()
