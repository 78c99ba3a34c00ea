"""Normalized Attention Guidance (NAG, arXiv 2505.21179) on diffusers' StableDiffusionPipeline, as
a reference for the Swift runtime. Our own attention processor, written from the paper's
algorithm 1 with the official implementation's parametrisation (ChenDarYen/Normalized-Attention-
Guidance: `Z~ = Z+ * phi - Z- * (phi - 1)`, L1 norms over the channels of each token, the ratio
clamped at tau, `alpha * Z~ + (1 - alpha) * Z+`, before to_out). It is installed on every
cross-attention layer (attn2) and steers the prompt's row, the last of the UNet batch; several
negatives act through the weighted mean of their Z-.

    python3 weights/make_nag_fixtures.py      # after make_fixtures.py

Writes weights/fixtures/nag-sd15.safetensors: per case `<case>.latents.<i>` after every step and
`<case>.image`, and the settings in the metadata (JSON under "cases").
Prompt "a red apple", seed 7, 64x64.
"""

import json
import os

import torch
import torch.nn.functional as F
import diffusers
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler, StableDiffusionPipeline

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "nag-sd15.safetensors")
MODELS = {"sd15": os.path.join(HERE, "fixtures", "tiny-sd15"), "sd2": os.path.join(HERE, "fixtures", "tiny-sd2")}
PROMPT, SEED = "a red apple", 7
SCHEDULERS = {"lcm": (LCMScheduler, {}), "euler": (EulerDiscreteScheduler, {}),
              "euler_a_trailing": (EulerAncestralDiscreteScheduler, {"timestep_spacing": "trailing"})}
# name: (model, sampler, steps, guidance scale, [(negative, weight)], phi, tau, alpha, NAG steps or None)
CASES = {
    "nag_lcm_scale1": ("sd15", "lcm", 4, 1.0, [("blurry", 1.0)], 5.0, 2.5, 0.25, None),
    "nag_euler_cfg": ("sd15", "euler", 3, 7.5, [("blurry", 1.0)], 3.0, 2.0, 0.5, None),
    "nag_euler_window": ("sd15", "euler", 3, 1.0, [("green tones", 1.0)], 5.0, 2.5, 0.25, (2, 3)),
    "nag_two_negatives": ("sd15", "lcm", 3, 1.0, [("blurry", 0.7), ("green tones", 0.3)], 4.0, 3.0, 0.4, None),
    "nag_sd2_turbo": ("sd2", "euler_a_trailing", 2, 1.0, [("blurry", 1.0)], 5.0, 2.5, 0.25, None),
    "nag_off_phi1": ("sd15", "lcm", 2, 1.0, [("blurry", 1.0)], 1.0, 2.5, 0.25, None),
}


def attention(attn, query, key, value):
    heads = attn.heads
    b, tq, inner = query.shape
    d = inner // heads
    q = query.view(b, tq, heads, d).transpose(1, 2)
    k = key.view(key.shape[0], -1, heads, d).transpose(1, 2)
    v = value.view(value.shape[0], -1, heads, d).transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, tq, inner)


class NAGProcessor:
    def __init__(self, state):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        out = attention(attn, query, key, value)
        s = self.state
        active = s["phi"] > 1 and (s["steps"] is None or s["steps"][0] <= s["step"] + 1 <= s["steps"][1])
        if active:
            positive = out[-1:]
            negatives = [attention(attn, query[-1:], attn.to_k(n), attn.to_v(n)) for n in s["negatives"]]
            total = sum(s["weights"])
            negative = sum(z * (w / total) for z, w in zip(negatives, s["weights"])) if len(negatives) > 1 \
                else negatives[0]
            phi, tau, alpha = s["phi"], s["tau"], s["alpha"]
            guided = positive * phi - negative * (phi - 1)
            ratio = guided.abs().sum(-1, keepdim=True) / positive.abs().sum(-1, keepdim=True)
            guided = guided * torch.minimum(ratio, torch.full_like(ratio, tau)) / ratio
            out = torch.cat([out[:-1], guided * alpha + positive * (1 - alpha)], 0)
        return attn.to_out[1](attn.to_out[0](out))


def main():
    torch.set_num_threads(1)
    tensors, settings, pipes = {}, {}, {}
    for case, (model, sampler, steps, scale, negatives, phi, tau, alpha, window) in CASES.items():
        if model not in pipes:
            pipe = StableDiffusionPipeline.from_pretrained(
                MODELS[model], torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            pipes[model] = (pipe, pipe.scheduler.config)
        pipe, base_config = pipes[model]
        cls, overrides = SCHEDULERS[sampler]
        pipe.scheduler = cls.from_config(base_config, **overrides)
        with torch.no_grad():
            embeds = [pipe.encode_prompt(text, "cpu", 1, False)[0] for text, _ in negatives]
        state = dict(step=0, phi=phi, tau=tau, alpha=alpha, steps=window, negatives=embeds,
                     weights=[w for _, w in negatives])
        pipe.unet.set_attn_processor({name: NAGProcessor(state) if name.endswith("attn2.processor")
                                      else diffusers.models.attention_processor.AttnProcessor2_0()
                                      for name in pipe.unet.attn_processors})
        # With scale > 1, classifier-free guidance uses the (first) negative prompt as well.
        latents_after, image = recorded_run(
            pipe, SEED, after_step=lambda i: state.update(step=i + 1), prompt=PROMPT,
            negative_prompt=negatives[0][0] if scale > 1 else None, num_inference_steps=steps,
            guidance_scale=scale)
        tensors.update(case_tensors(case, latents_after, image))
        settings[case] = dict(model=model, scheduler=cls.__name__, overrides=overrides, steps=steps,
                              guidance_scale=scale, negatives=negatives, nag_scale=phi, nag_tau=tau,
                              nag_alpha=alpha, nag_steps=window)
        print(case, "image range", float(image.min()), float(image.max()))
    save_fixture(tensors, OUT, "python3 weights/make_nag_fixtures.py", cases=json.dumps(settings),
                 prompt=PROMPT, seed=str(SEED))


if __name__ == "__main__":
    main()
