#!/usr/bin/env python3
"""Generate reference fixtures for the Swift Stable Diffusion runtime.

Run from the repo root:

    python3 weights/make_fixtures.py              # everything
    python3 weights/make_fixtures.py --only ops,rng

Parts (in order): ops, rng, models, clip, unet, vae.
`clip`, `unet` and `vae` need the tiny models written by `models`.
Output goes to weights/fixtures/. See weights/FIXTURES.md.
"""
import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import diffusers
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
COMMAND = "python3 weights/make_fixtures.py"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32"}


def save_file(tensors, path, metadata=None):
    """Byte-deterministic safetensors writer (safetensors.torch.save_file emits the JSON
    header in HashMap order, which changes run to run). Same format: u64 LE header size,
    JSON header (sorted keys, space-padded to 8 bytes), then the raw little-endian data."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":"), sort_keys=False).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def metadata(seed, **extra):
    md = {
        "command": COMMAND,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "seed": str(seed),
    }
    for k, v in extra.items():
        md[k] = v if isinstance(v, str) else json.dumps(v)
    return md


def write(name, tensors, seed, **extra):
    out = {}
    for k, v in tensors.items():
        if not torch.is_tensor(v):
            v = torch.tensor(v)
        out[k] = v.detach().to(torch.float32).contiguous().clone()
    path = os.path.join(OUT, name)
    save_file(out, path, metadata=metadata(seed, **extra))
    print(f"wrote {path}: {len(out)} tensors, {os.path.getsize(path) / 1e6:.3f} MB")
    return path


# ---------------------------------------------------------------------------
# A. kernel-level ops
# ---------------------------------------------------------------------------

def attention_ref(q, k, v, heads, is_causal=False):
    b, tq, c = q.shape
    tk = k.shape[1]
    d = c // heads
    qh = q.view(b, tq, heads, d).transpose(1, 2)
    kh = k.view(b, tk, heads, d).transpose(1, 2)
    vh = v.view(b, tk, heads, d).transpose(1, 2)
    o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=is_causal)
    return o.transpose(1, 2).reshape(b, tq, c)


def part_ops():
    from diffusers.models.embeddings import get_timestep_embedding

    seed = 0
    torch.manual_seed(seed)
    t = {}
    r = torch.randn

    # linear
    x, w, b = r(3, 5, 7), r(11, 7), r(11)
    x[0, 0] *= 10.0  # some larger values
    t.update({"linear.x": x, "linear.weight": w, "linear.bias": b, "linear.out": F.linear(x, w, b)})

    # matmul
    a, bb = r(2, 3, 5, 7), r(2, 3, 7, 4) * 4.0
    t.update({"matmul.a": a, "matmul.b": bb, "matmul.out": a @ bb})

    # conv
    convs = [
        ("k3s1p1", (2, 5, 9, 7), (6, 5, 3, 3), 1, 1, False),
        ("k3s2p1", (2, 4, 9, 8), (3, 4, 3, 3), 2, 1, False),
        ("k1s1p0", (2, 8, 5, 5), (4, 8, 1, 1), 1, 0, False),
        ("k3s1p0", (1, 3, 6, 5), (2, 3, 3, 3), 1, 0, False),
        ("k3s2p0_padded", (1, 4, 8, 8), (5, 4, 3, 3), 2, 0, True),
    ]
    for name, xs, ws, stride, pad, padded in convs:
        x, w, b = r(*xs), r(*ws), r(ws[0])
        xin = F.pad(x, (0, 1, 0, 1)) if padded else x
        o = F.conv2d(xin, w, b, stride=stride, padding=pad)
        p = f"conv.{name}."
        t.update({p + "x": x, p + "weight": w, p + "bias": b, p + "out": o})

    # group norm
    for name, xs, groups, eps in [("eps6", (2, 64, 5, 3), 32, 1e-6),
                                  ("eps5", (2, 64, 5, 3), 32, 1e-5),
                                  ("small", (1, 6, 1, 7), 3, 1e-5)]:
        c = xs[1]
        x, w, b = r(*xs) * 3 + 2, r(c), r(c)
        o = F.group_norm(x, groups, w, b, eps)
        p = f"groupnorm.{name}."
        t.update({p + "x": x, p + "weight": w, p + "bias": b, p + "out": o})

    # layer norm
    x, w, b = r(3, 4, 10) * 3 + 2, r(10), r(10)
    t.update({"layernorm.x": x, "layernorm.weight": w, "layernorm.bias": b,
              "layernorm.out": F.layer_norm(x, (10,), w, b, 1e-5)})

    # softmax
    x = r(3, 7, 13) * 5
    t.update({"softmax.x": x, "softmax.out": torch.softmax(x, dim=-1)})

    # activations
    x = r(4, 37) * 3
    t.update({"act.x": x,
              "act.silu": F.silu(x),
              "act.gelu": F.gelu(x),
              "act.gelu_tanh": F.gelu(x, approximate="tanh"),
              "act.quick_gelu": x * torch.sigmoid(1.702 * x)})

    # geglu
    x = r(2, 3, 10) * 2
    h, gate = x.chunk(2, -1)
    t.update({"geglu.x": x, "geglu.out": h * F.gelu(gate)})

    # upsample
    x = r(2, 3, 4, 5)
    t.update({"upsample.x": x, "upsample.out": F.interpolate(x, scale_factor=2.0, mode="nearest")})

    # attention
    q, k, v = r(2, 9, 16), r(2, 5, 16), r(2, 5, 16)
    t.update({"attention.q": q, "attention.k": k, "attention.v": v,
              "attention.out": attention_ref(q, k, v, 2)})
    q, k, v = r(2, 7, 12), r(2, 7, 12), r(2, 7, 12)
    t.update({"attention_causal.q": q, "attention_causal.k": k, "attention_causal.v": v,
              "attention_causal.out": attention_ref(q, k, v, 3, is_causal=True)})
    q, k, v = r(1, 300, 8), r(1, 300, 8), r(1, 300, 8)
    t.update({"attention_long.q": q, "attention_long.k": k, "attention_long.v": v,
              "attention_long.out": attention_ref(q, k, v, 1)})

    # timestep embeddings
    ts = torch.tensor([1.0, 500.0, 999.0, 0.5], dtype=torch.float32)
    t["temb.t"] = ts
    t["temb.flip"] = get_timestep_embedding(ts, 32, flip_sin_to_cos=True, downscale_freq_shift=0)
    t["temb.noflip"] = get_timestep_embedding(ts, 32, flip_sin_to_cos=False, downscale_freq_shift=1)
    t["temb.odd"] = get_timestep_embedding(ts, 33, flip_sin_to_cos=True, downscale_freq_shift=0)

    params = {
        "conv": {c[0]: {"stride": c[3], "padding": c[4], "pre_pad_right_bottom": c[5]} for c in convs},
        "groupnorm": {"eps6": [32, 1e-6], "eps5": [32, 1e-5], "small": [3, 1e-5]},
        "layernorm_eps": 1e-5,
        "attention_heads": {"attention": 2, "attention_causal": 3, "attention_long": 1},
        "temb": {"flip": [32, True, 0], "noflip": [32, False, 1], "odd": [33, True, 0]},
    }
    write("ops.safetensors", t, seed, params=params)


# ---------------------------------------------------------------------------
# B. torch CPU RNG stream
# ---------------------------------------------------------------------------

def part_rng():
    t = {}
    for s in [0, 42, 1234567]:
        for n in [1, 15, 16, 17, 100, 4096]:
            g = torch.Generator("cpu").manual_seed(s)
            t[f"randn.seed{s}.n{n}"] = torch.randn(n, generator=g, dtype=torch.float32)
        shapes = [(1, 4, 8, 8)] + ([(2, 4, 64, 64)] if s == 42 else [])
        for shape in shapes:
            g = torch.Generator("cpu").manual_seed(s)
            label = "x".join(str(d) for d in shape)
            t[f"randn.seed{s}.{label}"] = torch.randn(shape, generator=g, dtype=torch.float32)
    g = torch.Generator("cpu").manual_seed(42)
    parts = [torch.randn((1, 4, 8, 8), generator=g), torch.randn((5,), generator=g),
             torch.randn((1, 4, 8, 8), generator=g)]
    t["sequence.seed42"] = torch.cat([p.flatten() for p in parts])
    g = torch.Generator("cpu").manual_seed(42)
    t["float64.seed42.n20"] = torch.randn(20, dtype=torch.float64, generator=g).float()
    write("rng.safetensors", t, "0,42,1234567 (see tensor names)")


# ---------------------------------------------------------------------------
# C. tiny models
# ---------------------------------------------------------------------------

OPEN_CLIP_SPEC = "open_clip_torch==3.3.0"  # only used as a source of the MIT-licensed CLIP BPE file
BPE_CACHE = "/tmp/oc"

SD15_DIR = os.path.join(OUT, "tiny-sd15")
SD2_DIR = os.path.join(OUT, "tiny-sd2")

# stable-diffusion-v1-5 scheduler/scheduler_config.json
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "clip_sample": False, "trained_betas": None,
}
# stabilityai/stable-diffusion-2 (768-v) scheduler/scheduler_config.json
SD2_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "clip_sample": False, "trained_betas": None,
}

TEXT_COMMON = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                   max_position_embeddings=77, layer_norm_eps=1e-5, projection_dim=32,
                   bos_token_id=0, eos_token_id=2, pad_token_id=1)
TEXT_CFG = {
    "sd15": dict(TEXT_COMMON, num_hidden_layers=3, hidden_act="quick_gelu"),
    "sd2": dict(TEXT_COMMON, num_hidden_layers=4, hidden_act="gelu"),
}
UNET_COMMON = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[32, 64],
                   layers_per_block=1, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=32,
                   norm_num_groups=32)
UNET_CFG = {
    "sd15": dict(UNET_COMMON, attention_head_dim=8),
    "sd2": dict(UNET_COMMON, attention_head_dim=[2, 4], use_linear_projection=True, upcast_attention=True),
}
VAE_CFG = dict(in_channels=3, out_channels=3, block_out_channels=[32, 32, 64, 64], layers_per_block=1,
               latent_channels=4, norm_num_groups=32, down_block_types=["DownEncoderBlock2D"] * 4,
               up_block_types=["UpDecoderBlock2D"] * 4, sample_size=64, scaling_factor=0.18215)

MODEL_SEEDS = {"sd15.text_encoder": 1000, "sd15.unet": 1001, "vae": 1002,
               "sd2.text_encoder": 2000, "sd2.unet": 2001}


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_bpe_merges():
    os.makedirs(BPE_CACHE, exist_ok=True)
    wheels = [f for f in os.listdir(BPE_CACHE) if f.startswith("open_clip_torch") and f.endswith(".whl")]
    if not wheels:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-d", BPE_CACHE,
                               OPEN_CLIP_SPEC])
        wheels = [f for f in os.listdir(BPE_CACHE) if f.startswith("open_clip_torch") and f.endswith(".whl")]
    with zipfile.ZipFile(os.path.join(BPE_CACHE, sorted(wheels)[-1])) as z:
        data = gzip.decompress(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8")
    lines = data.split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    return [tuple(m.split()) for m in merges]


def write_clip_tokenizer(folder, pad_token):
    os.makedirs(folder, exist_ok=True)
    merges = clip_bpe_merges()
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    cfg = {
        "add_prefix_space": False,
        "bos_token": "<|startoftext|>",
        "do_lower_case": True,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>",
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": pad_token, "unk_token": "<|endoftext|>"}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)


def check_tokenizer(folder, pad_id):
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(folder)
    ids = tok("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    assert len(tok) == 49408, len(tok)
    assert tok.pad_token_id == pad_id, tok.pad_token_id
    print(f"tokenizer ok ({folder}): {ids}, vocab {len(tok)}, pad {tok.pad_token} -> {tok.pad_token_id}")


def rerandomize(model, seed):
    """Overwrite every parameter with seeded noise so every tensor matters:
    norm weights 1 +- 0.1, biases std 0.1, all other weights std 0.2."""
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for mname, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
                if pname == "bias":
                    val = 0.1 * noise
                elif isinstance(module, norm_types) and pname == "weight":
                    val = 1.0 + 0.1 * noise
                else:
                    val = 0.2 * noise
                p.copy_(val.to(p.dtype))
    for name, b in model.named_buffers():
        pass  # buffers (e.g. position_ids) are left as constructed
    return model


def stamp_safetensors(path, seed, **extra):
    """Rewrite a safetensors file produced by save_pretrained with our metadata
    (keeps the tensors bit-identical and keeps `format: pt`)."""
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        old = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    md = dict(old)
    md.update(metadata(seed, **extra))
    save_file(tensors, path, metadata=md)


def build_models(kind, vae):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel, PNDMScheduler, EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    folder = SD15_DIR if kind == "sd15" else SD2_DIR
    if os.path.isdir(folder):
        shutil.rmtree(folder)

    s = MODEL_SEEDS[f"{kind}.text_encoder"]
    torch.manual_seed(s)
    te = CLIPTextModel(CLIPTextConfig(**TEXT_CFG[kind]))
    rerandomize(te, s).eval()
    te = te.half()

    s = MODEL_SEEDS[f"{kind}.unet"]
    torch.manual_seed(s)
    unet = rerandomize(UNet2DConditionModel(**UNET_CFG[kind]), s).eval()

    sched_cfg = SD15_SCHEDULER if kind == "sd15" else SD2_SCHEDULER
    sched_cls = PNDMScheduler if kind == "sd15" else EulerDiscreteScheduler
    sched = sched_cls.from_config({k: v for k, v in sched_cfg.items() if k != "_class_name"})

    tmp_tok = tempfile.mkdtemp()
    pad = "<|endoftext|>" if kind == "sd15" else "!"
    write_clip_tokenizer(tmp_tok, pad)
    tok = CLIPTokenizer.from_pretrained(tmp_tok)

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    # Replace whatever transformers wrote for the tokenizer by the plain slow-format files
    # (vocab.json + merges.txt + configs); no tokenizer.json (big, redundant).
    shutil.rmtree(os.path.join(folder, "tokenizer"))
    shutil.copytree(tmp_tok, os.path.join(folder, "tokenizer"))
    shutil.rmtree(tmp_tok)
    check_tokenizer(os.path.join(folder, "tokenizer"), 49407 if kind == "sd15" else 0)

    seeds = {"text_encoder": MODEL_SEEDS[f"{kind}.text_encoder"], "unet": MODEL_SEEDS[f"{kind}.unet"],
             "vae": MODEL_SEEDS["vae"]}
    for root, _, files in os.walk(folder):
        for fn in files:
            if fn.endswith(".safetensors"):
                comp = os.path.basename(root)
                stamp_safetensors(os.path.join(root, fn), seeds.get(comp, "n/a"), component=comp,
                                  model=f"tiny-{kind}")
    # verify the folder loads as a pipeline
    p2 = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    assert p2.safety_checker is None
    print(f"pipeline ok: {folder} ({type(p2.scheduler).__name__}, text_encoder saved as "
          f"{next(iter(load_file(os.path.join(folder, 'text_encoder', 'model.safetensors')).values())).dtype})")


def part_models():
    from diffusers import AutoencoderKL
    s = MODEL_SEEDS["vae"]
    torch.manual_seed(s)
    vae = rerandomize(AutoencoderKL(**VAE_CFG), s).eval()
    build_models("sd15", vae)
    build_models("sd2", vae)  # same VAE weights (copied)


# ---------------------------------------------------------------------------
# D. reference activations
# ---------------------------------------------------------------------------

PROMPTS = ["", "a photo of a cat", "a red apple on a wooden table, green tones, highly detailed",
           "hello world!"]


def load_pipe(kind):
    from diffusers import StableDiffusionPipeline
    folder = SD15_DIR if kind == "sd15" else SD2_DIR
    if not os.path.isdir(folder):
        sys.exit(f"{folder} missing: run --only models first")
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    for m in (pipe.text_encoder, pipe.unet, pipe.vae):
        m.eval()
    return pipe


def part_clip():
    for kind in ["sd15", "sd2"]:
        pipe = load_pipe(kind)
        te, tok = pipe.text_encoder, pipe.tokenizer
        assert te.dtype == torch.float32
        t = {}
        with torch.no_grad():
            for i, p in enumerate(PROMPTS):
                ids = tok(p, padding="max_length", max_length=77, truncation=True,
                          return_tensors="pt").input_ids
                out = te(ids, output_hidden_states=True)
                t[f"prompt{i}.ids"] = ids[0].float()
                assert len(out.hidden_states) == te.config.num_hidden_layers + 1
                for L, h in enumerate(out.hidden_states):
                    t[f"prompt{i}.hidden.{L}"] = h
                t[f"prompt{i}.last_hidden_state"] = out.last_hidden_state
        write(f"clip-{kind}.safetensors", t, "n/a (model weights: see tiny-%s)" % kind,
              prompts=PROMPTS, num_layers=te.config.num_hidden_layers,
              attn_implementation=str(te.config._attn_implementation))


def hooks(named_modules, store, prefix):
    hs = []
    for name, mod in named_modules:
        def fn(module, inp, out, name=name):
            if isinstance(out, (tuple, list)):
                out = out[0]
            elif hasattr(out, "sample"):
                out = out.sample
            store[f"{prefix}.{name}"] = out.detach().clone()
        hs.append(mod.register_forward_hook(fn))
    return hs


def part_unet():
    for kind in ["sd15", "sd2"]:
        pipe = load_pipe(kind)
        unet = pipe.unet
        seed = 10
        torch.manual_seed(seed)
        t = {}
        cases = [("case0", (2, 4, 8, 8), [999.0, 1.0]), ("case1", (2, 4, 16, 8), [500.0, 500.0])]
        for case, shape, ts in cases:
            sample = torch.randn(shape)
            ehs = torch.randn(2, 77, 32)
            timesteps = torch.tensor(ts, dtype=torch.float32)
            mods = [("time_embedding", unet.time_embedding), ("conv_in", unet.conv_in)]
            mods += [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
            mods += [("mid_block", unet.mid_block)]
            mods += [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
            mods += [("conv_out", unet.conv_out)]
            store = {}
            hs = hooks(mods, store, case)
            with torch.no_grad():
                out = unet(sample, timesteps, encoder_hidden_states=ehs, return_dict=False)[0]
            for h in hs:
                h.remove()
            assert torch.equal(out, store[f"{case}.conv_out"])
            t.update({f"{case}.sample": sample, f"{case}.timesteps": timesteps,
                      f"{case}.encoder_hidden_states": ehs, f"{case}.out": out})
            t.update(store)
        write(f"unet-{kind}.safetensors", t, seed)


def encode_reference(vae, t):
    """`encode.*` of the VAE fixtures: a seeded image through the encoder (its mid block, mean,
    log-variance) and the sample of a seeded noise; draws from torch's global generator."""
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    noise = torch.randn(1, 4, 8, 8)
    store = {}
    hs = hooks([("mid_block", vae.encoder.mid_block)], store, "encode")
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
    for h in hs:
        h.remove()
    t["encode.image"] = image
    t.update(store)
    t["encode.mean"] = dist.mean
    t["encode.logvar"] = dist.logvar
    t["encode.noise"] = noise
    t["encode.sample"] = dist.mean + dist.std * noise


def part_vae():
    pipe = load_pipe("sd15")
    vae = pipe.vae
    seed = 20
    torch.manual_seed(seed)
    t = {}
    latents = torch.randn(2, 4, 8, 8)
    dec = vae.decoder
    mods = [("conv_in", dec.conv_in), ("mid_block", dec.mid_block)]
    mods += [(f"up_blocks.{i}", b) for i, b in enumerate(dec.up_blocks)]
    store = {}
    hs = hooks(mods, store, "decode")
    with torch.no_grad():
        out = vae.decode(latents, return_dict=False)[0]
    for h in hs:
        h.remove()
    t["decode.latents"] = latents
    t.update(store)
    t["decode.out"] = out

    encode_reference(vae, t)
    write("vae.safetensors", t, seed, scaling_factor=str(vae.config.scaling_factor))


PARTS = {
    "ops": part_ops,
    "rng": part_rng,
    "models": part_models,
    "clip": part_clip,
    "unet": part_unet,
    "vae": part_vae,
}


def fix_permissions(root):
    for d, dirs, files in os.walk(root):
        os.chmod(d, 0o755)
        for fn in files:
            os.chmod(os.path.join(d, fn), 0o644)


def run_parts(parts, folder):
    """The scripts' command line: `--only a,b` runs those of `parts` (name -> function), in
    `parts`' order, default all; then the files under `folder` get ordinary permissions."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated parts: " + ",".join(parts))
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(parts)
    for n in names:
        if n not in parts:
            sys.exit(f"unknown part {n!r}; choose from {list(parts)}")
    os.makedirs(folder, exist_ok=True)
    for n in parts:
        if n in names:
            t0 = time.time()
            parts[n]()
            print(f"[{n}] {time.time() - t0:.1f}s")
    fix_permissions(folder)


def main():
    run_parts(PARTS, OUT)


if __name__ == "__main__":
    main()
