#!/usr/bin/env python3
"""Reference for tiled VAE decoding: diffusers' AutoencoderKL with tiling enabled.

    python3 weights/make_vae_tiling_fixture.py     (after make_fixtures.py)

Writes weights/fixtures/vae-tiled.safetensors with, for the tiny SD 1.5-like VAE
(weights/fixtures/tiny-sd15/vae; its sample_size 64 makes diffusers' tiles 8 latents with a
25 % overlap):
  latents   [1, 4, 16, 20]   seeded, already divided by the scaling factor
  tiled     [1, 3, 128, 160] vae.enable_tiling(); vae.decode(latents)
  untiled   [1, 3, 128, 160] vae.decode(latents) without tiling
"""
import os
import sys

import torch
from diffusers import AutoencoderKL

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import save_file  # noqa: E402

torch.set_num_threads(1)
vae = AutoencoderKL.from_pretrained(os.path.join(HERE, "fixtures", "tiny-sd15", "vae")).eval()
latents = torch.randn(1, 4, 16, 20, generator=torch.Generator().manual_seed(3))
with torch.no_grad():
    untiled = vae.decode(latents).sample
    vae.enable_tiling()
    tiled = vae.decode(latents).sample
print("tile latent size", vae.tile_latent_min_size, "overlap", vae.tile_overlap_factor,
      "max |tiled - untiled|", float((tiled - untiled).abs().max()))
save_file({"latents": latents, "tiled": tiled, "untiled": untiled},
          os.path.join(HERE, "fixtures", "vae-tiled.safetensors"),
          metadata={"command": "python3 weights/make_vae_tiling_fixture.py",
                    "tile_latent_min_size": str(vae.tile_latent_min_size),
                    "tile_overlap_factor": str(vae.tile_overlap_factor)})
