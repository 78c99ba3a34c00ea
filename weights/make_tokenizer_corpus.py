#!/usr/bin/env python3
"""Reference token ids for the Swift CLIP tokenizer test.

Run from the repo root (after make_fixtures.py has written the tiny model folders):

    python3 weights/make_tokenizer_corpus.py

Writes weights/fixtures/tokenizer-corpus.json: for every prompt of PROMPTS, the ids that
transformers.CLIPTokenizer (the class diffusers loads) gives with the SD 1.x tokenizer
(pads with <|endoftext|>) and the SD 2.x one (pads with "!", id 0):
  "ids":        tokenizer(prompt).input_ids           (BOS ... EOS, not truncated)
  "tokens":     tokenizer.tokenize(prompt)            (token strings, no BOS/EOS)
  "sd15"/"sd2": tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
"""
import json
import os

import transformers
from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")

HANDWRITTEN = [
    "",
    " ",
    "a red apple on a wooden table",
    "green tones",
    "hands",
    "blurry",
    "NSFW",
    "A Photograph Of An ASTRONAUT Riding A Horse",
    "a photo of a cat, highly detailed, 8k, trending on artstation",
    "   leading and trailing spaces   ",
    "multiple     spaces\tand\ttabs\nand\nnewlines\r\nwindows",
    "ugly, tiling, poorly drawn hands, poorly drawn feet, poorly drawn face, out of frame, extra limbs, disfigured, deformed, body out of frame, bad anatomy, watermark, signature, cut off, low contrast, underexposed, overexposed, bad art, beginner, amateur, distorted face",
    "(masterpiece:1.2), ((best quality)), [lowres], {detailed}",
    "it's a dog's life, isn't it? we're here, they've gone, I'm fine, you'll see, he'd know",
    "IT'S LOUD, DON'T SHOUT, WE'RE DONE",
    "don\u2019t use curly apostrophes \u2018like this\u2019",
    "'s 't 're 've 'm 'll 'd",
    "''quoted'' and \"double quoted\"",
    "rock'n'roll o'clock y'all",
    "1girl, 2boys, 3d render, 4k uhd, 1920x1080, 16:9",
    "3.14159 2,000,000 1e-5 -42 +7 100%",
    "year 1999 and 2024, version 1.5 vs 2.1",
    "\u00bd \u00b2 \u2163 \u0663 \u0969",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade se\u00f1or \u00fcber stra\u00dfe",
    "cafe\u0301 decomposed accents e\u0301\u0300",
    "\u00c9L\u00c8VE \u00c0 PARIS, \u00c7A VA",
    "\u0130stanbul \u0131\u015f\u0131k",
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u03c3\u03bf\u03c6\u03af\u03b1",
    "\u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440, \u041c\u041e\u0421\u041a\u0412\u0410",
    "\u6771\u4eac\u30bf\u30ef\u30fc\u306e\u5915\u713c\u3051",
    "\u4e00\u53ea\u53ef\u7231\u7684\u732b\u5728\u8349\u5730\u4e0a",
    "\ud55c\uad6d\uc5b4 \ud504\ub86c\ud504\ud2b8",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "emoji \U0001F600\U0001F431\U0001F680 party \U0001F389",
    "family \U0001F468\u200d\U0001F469\u200d\U0001F467 and flag \U0001F1EF\U0001F1F5",
    "skin tone \U0001F44D\U0001F3FD thumbs",
    "heart \u2764\ufe0f and star \u2b50",
    "symbols \u00a9 \u00ae \u2122 \u00b0 \u00b1 \u00d7 \u00f7 \u2192 \u221e",
    "math \u2211 \u222b \u221a \u2248 \u2260 \u2264",
    "currency $100 \u20ac50 \u00a330 \u00a51000",
    "punctuation!!! ??? ... --- *** ### @@@",
    "a,b;c:d.e!f?g",
    "hyphen-ated well-known state-of-the-art",
    "under_score snake_case_name CamelCaseWord",
    "http://example.com/path?query=1&x=2",
    "email me at someone@example.org",
    "<|startoftext|> in the middle <|endoftext|>",
    "<|endoftext|>",
    "<|ENDOFTEXT|> upper-case special token",
    "glued<|endoftext|>token",
    "hello!world wow!! !?! \"!\"",
    "tags <lora:detail:0.8> <hypernet>",
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis and antidisestablishmentarianism",
    "a" * 100,
    "ab" * 60,
    "x" * 300,
    "verylongwordwithoutanyspaces" * 5,
    "word " * 80,
    "a photo of " * 20,
    "tab\there",
    "non\u00a0breaking\u00a0space",
    "em\u2003space and ideographic\u3000space",
    "zero\u200bwidth\u200bspace",
    "soft\u00adhyphen",
    "line\u2028separator",
    "combining n\u0303 a\u0308 o\u0302",
    "full\uff37\uff49\uff44\uff54\uff48 \uff21\uff22\uff23",
    "ligature \ufb01sh \ufb02ower",
    "roman \u2160 \u2161 \u2162",
    "superscript x\u00b2 y\u00b3",
    "fraction \u2153 \u00be",
    "circled \u2460 \u2461",
    "CAPS LOCK IS ON",
    "MiXeD cAsE tExT",
    "portrait of a woman, by greg rutkowski, alphonse mucha, wlop",
    "cyberpunk city at night, neon lights, rain, reflections, blade runner style",
    "oil painting of a lighthouse in a storm, dramatic lighting",
    "watercolor landscape, mountains, lake, sunrise, soft colors",
    "a cute corgi wearing sunglasses on the beach",
    "studio ghibli style forest with spirits",
    "macro photograph of a dewdrop on a leaf, bokeh",
    "isometric pixel art of a tiny house",
    "low poly 3d model of a fox",
    "ancient ruins overgrown with vines, matte painting",
    "steampunk airship above victorian london",
    "a bowl of ramen, food photography, 50mm lens, f/1.8",
    "black and white photo of an old man smiling",
    "concept art of a dragon, unreal engine 5, octane render",
    "an astronaut riding a horse on mars",
    "the quick brown fox jumps over the lazy dog",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "Pack my box with five dozen liquor jugs.",
    "sphinx of black quartz, judge my vow",
    "text with trailing period.",
    ".leading period",
    "!",
    "!!",
    "!a",
    "a!",
    "0",
    "00000",
    "a1b2c3",
    "4k",
    "8K UHD",
    "f/2.8",
    "1/100s",
    "ISO-800",
    "no_space,between,commas",
    "[[[nested brackets]]]",
    "(((emphasis)))",
    "weight:1.5",
    "a | b | c",
    "back\\slash",
    "tilde~ caret^ backtick` pipe|",
    "quotes \u201cdouble\u201d \u00abguillemets\u00bb \u201elow\u201c",
    "dash \u2013 en \u2014 em",
    "ellipsis\u2026",
    "bullet \u2022 point",
    "degree 45\u00b0 angle",
    "micro \u00b5m and ohm \u2126",
    "ordinal 1st 2nd 3rd 4th",
    "1,000 words",
    "R2-D2 and C-3PO",
    "B-52 bomber",
    "COVID-19",
    "Windows 95",
    "a\u0000null",
    "bell\u0007char",
    "escape\u001b[0m",
    "del\u007fchar",
    "control\u0085nel",
    "private use \ue000",
    "replacement \ufffd char",
    "surrogate-free \U00010348 gothic",
    "music \U0001D11E clef",
    "emoji only \U0001F525\U0001F525\U0001F525",
    "\U0001F308",
    "k\u00f8benhavn \u00e6r\u00f8 \u00e5",
    "polski \u0142\u00f3d\u017a \u017c\u00f3\u0142w",
    "\u010de\u0161tina \u0159\u00edjen",
    "ti\u1ebfng vi\u1ec7t",
    "\u0561\u0575\u0578 armenian",
    "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8 georgian",
    "ethiopic \u1230\u120b\u121d",
    "mongolian \u182e\u1823\u1829",
    "dotless i \u0131 and dotted \u0130",
    "german \u1e9e capital sharp s",
    "final sigma \u039f\u03a3 \u03bf\u03c2",
    "greek \u0391\u0392\u0393 \u03b1\u03b2\u03b3",
    "cherokee \u13a0\u13a1",
    "titlecase \u01c5 \u01c8",
]

SUBJECTS = ["a cat", "an old castle", "a futuristic car", "two friends", "a bowl of fruit",
            "the moon", "a robot", "a forest path", "a sailing ship", "a city street"]
STYLES = ["oil painting", "photo, 35mm", "anime style", "digital art", "pencil sketch",
          "8k, ultra detailed", "by Van Gogh", "cinematic lighting", "isometric", "vaporwave"]
EXTRAS = ["", ", it's raining", " at 3am", " (no people)", ", 50% zoom", " \u2014 caf\u00e9",
          " \U0001F31F", ", hands, blurry, NSFW", " [[detailed]]", " x2"]


def generated():
    prompts = []
    for i in range(100):
        subject, style, extra = SUBJECTS[i % 10], STYLES[(i * 3) % 10], EXTRAS[(i * 7) % 10]
        prompt = f"{subject}, {style}{extra}"
        prompts.append(prompt.upper() if i % 11 == 0 else prompt)
    return prompts


def main():
    prompts = HANDWRITTEN + generated()
    assert len(prompts) >= 200, len(prompts)
    sd15 = CLIPTokenizer.from_pretrained(os.path.join(FIXTURES, "tiny-sd15", "tokenizer"))
    sd2 = CLIPTokenizer.from_pretrained(os.path.join(FIXTURES, "tiny-sd2", "tokenizer"))
    cases = []
    for prompt in prompts:
        padded = dict(padding="max_length", max_length=77, truncation=True)
        cases.append({
            "prompt": prompt,
            "ids": sd15(prompt).input_ids,
            "tokens": sd15.tokenize(prompt),
            "sd15": sd15(prompt, **padded).input_ids,
            "sd2": sd2(prompt, **padded).input_ids,
        })
    corpus = {
        "command": "python3 weights/make_tokenizer_corpus.py",
        "transformers": transformers.__version__,
        "cases": cases,
    }
    path = os.path.join(FIXTURES, "tokenizer-corpus.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(corpus, f, ensure_ascii=True, indent=0)
        f.write("\n")
    print(f"{len(cases)} prompts -> {path}")


if __name__ == "__main__":
    main()
