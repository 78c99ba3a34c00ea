#!/usr/bin/env python3
"""Reference encodings of prompts as people write them, for the Swift PromptEncoder tests.

    python3 weights/make_prompt_fixtures.py       (after make_fixtures.py)

Writes weights/fixtures/prompts-sd15.safetensors (tiny SD 1.5-like text encoder):
  weighted.<i>   [1, 77·chunks, 32]  WEIGHTED[i] encoded with attention weights and chunking
  embedding.<i>  [1, 77, 32]         EMBEDDING_PROMPTS[i] encoded with the textual-inversion files
and weights/fixtures/embeddings/{bad-hands,cat-toy}.safetensors (random vectors). The metadata
holds the prompts and the parsed (text, weight) fragments as JSON.

Two references:
* weights and long prompts: the web UIs' published behaviour (AUTOMATIC1111's
  `parse_prompt_attention` and its chunked, mean-restoring weighting), re-implemented below from
  its description: fragments tokenized separately, chunks of 75 tokens (BOS/EOS/pad around
  each), the encoder output of every position multiplied by its weight, then the chunk rescaled
  to its original mean; chunks concatenated along the sequence;
* textual inversion: diffusers' own `load_textual_inversion` + `encode_prompt`.
"""
import json
import os
import re
import sys

import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import save_file  # noqa: E402  (byte-deterministic writer)

MODEL = os.path.join(HERE, "fixtures", "tiny-sd15")
OUT = os.path.join(HERE, "fixtures", "prompts-sd15.safetensors")
EMBEDDINGS = os.path.join(HERE, "fixtures", "embeddings")

WEIGHTED = [
    "a red apple on a wooden table",
    "a (red) apple",
    # (the web UIs' mean-restoring rule divides by the chunk's mean: prompts whose mean is ~0
    # are ill-conditioned in any implementation, so the cases here keep |mean| > 1e-4)
    "a ((red)) apple on a [wooden] table, photo",
    "(masterpiece:1.3), best quality, [[blurry]]",
    "a (red apple:0.5) and (green pear:1.8)",
    "nested (a (b:1.5) c) d",
    r"literal \(brackets\) and \[squares\] and a back\\slash",
    "unclosed (bracket and more",
    "stray ) closer ] here",
    "colon: not a weight (x: y)",
    "(weight with spaces : 1.2 )",
    "",
    ", ".join(["blurry", "lowres", "bad hands", "extra fingers", "jpeg artifacts", "watermark"] * 8),
    "(" + ", ".join(["ugly", "deformed", "noisy", "blurry", "distorted", "grainy"] * 10) + ":1.2), cat",
    " ".join(["word"] * 160),
]
EMBEDDING_PROMPTS = [
    "a photo of a cat-toy on a table",
    "bad-hands, blurry",
    "(bad-hands:1.4), lowres, cat-toy",
]

ROUND, SQUARE = 1.1, 1 / 1.1
TOKEN = re.compile(r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")


def parse_weights(text):
    """[(text, weight)]: brackets multiply the weight of what they enclose."""
    runs, rounds, squares = [], [], []

    def multiply(start, factor):
        for run in runs[start:]:
            run[1] *= factor

    for match in TOKEN.finditer(text):
        piece, weight = match.group(0), match.group(1)
        if piece.startswith("\\"):
            runs.append([piece[1:], 1.0])
        elif piece == "(":
            rounds.append(len(runs))
        elif piece == "[":
            squares.append(len(runs))
        elif weight is not None and rounds:
            multiply(rounds.pop(), float(weight))
        elif piece == ")" and rounds:
            multiply(rounds.pop(), ROUND)
        elif piece == "]" and squares:
            multiply(squares.pop(), SQUARE)
        else:
            runs.append([piece, 1.0])
    for start in rounds:
        multiply(start, ROUND)
    for start in squares:
        multiply(start, SQUARE)
    merged = []
    for text_, weight in runs:
        if not text_:
            continue
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text_
        else:
            merged.append([text_, weight])
    return merged


def encode_weighted(tokenizer, encoder, text):
    tokens, weights = [], []
    for fragment, weight in parse_weights(text):
        ids = tokenizer(fragment, add_special_tokens=False).input_ids
        tokens += ids
        weights += [weight] * len(ids)
    chunks = []
    start = 0
    while True:
        ids = tokens[start:start + 75]
        w = weights[start:start + 75]
        pad = 75 - len(ids)
        ids = [tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad
        w = [1.0] + w + [1.0] * (pad + 1)
        with torch.no_grad():
            z = encoder(torch.tensor([ids])).last_hidden_state
        if any(x != 1.0 for x in w):
            # In float64: the mean of a chunk can be close to 0, and the ratio of two means
            # then amplifies float32 summation error; this is the exact value of the rule.
            z = z.double()
            original_mean = z.mean()
            z = z * torch.tensor(w, dtype=torch.float64).reshape(1, -1, 1)
            z = (z * (original_mean / z.mean())).float()
        chunks.append(z)
        start += 75
        if start >= len(tokens):
            break
    return torch.cat(chunks, dim=1)


def write_embeddings():
    os.makedirs(EMBEDDINGS, exist_ok=True)
    generator = torch.Generator().manual_seed(7)
    save_file({"emb_params": torch.randn(2, 32, generator=generator)},
              os.path.join(EMBEDDINGS, "bad-hands.safetensors"),
              metadata={"command": "python3 weights/make_prompt_fixtures.py", "format": "web UI (emb_params)"})
    save_file({"cat-toy": torch.randn(32, generator=generator)},
              os.path.join(EMBEDDINGS, "cat-toy.safetensors"),
              metadata={"command": "python3 weights/make_prompt_fixtures.py", "format": "diffusers ({token: vector})"})


def main():
    torch.set_num_threads(1)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(MODEL, "tokenizer"))
    encoder = CLIPTextModel.from_pretrained(os.path.join(MODEL, "text_encoder"), torch_dtype=torch.float32).eval()
    tensors = {}
    parsed = []
    for i, prompt in enumerate(WEIGHTED):
        tensors[f"weighted.{i}"] = encode_weighted(tokenizer, encoder, prompt)
        parsed.append(parse_weights(prompt))

    write_embeddings()
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.load_textual_inversion(os.path.join(EMBEDDINGS, "bad-hands.safetensors"), token="bad-hands")
    pipe.load_textual_inversion(os.path.join(EMBEDDINGS, "cat-toy.safetensors"), token="cat-toy")
    for i, prompt in enumerate(EMBEDDING_PROMPTS):
        if "(" in prompt:
            # Weighted: diffusers has no weights, so encode the web-UI way with the vectors that
            # diffusers put into its embedding table for the added tokens.
            tensors[f"embedding.{i}"] = encode_weighted(pipe.tokenizer, pipe.text_encoder,
                                                        pipe.maybe_convert_prompt(prompt, pipe.tokenizer))
        else:
            with torch.no_grad():
                embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
            tensors[f"embedding.{i}"] = embeds
    metadata = {"command": "python3 weights/make_prompt_fixtures.py",
                "weighted": json.dumps(WEIGHTED), "parsed": json.dumps(parsed),
                "embedding_prompts": json.dumps(EMBEDDING_PROMPTS)}
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, OUT, metadata=metadata)
    print("wrote", OUT, len(tensors), "tensors")


if __name__ == "__main__":
    main()
