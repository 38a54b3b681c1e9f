#!/usr/bin/env python3
"""Generates Tests/Fixtures/tiled-vae-reference.safetensors: diffusers' tiled VAE decode
(`AutoencoderKL.tiled_decode`) of the tiny model's VAE, the oracle for Lumen's tiled decoding
(Tests/LumenTests/TiledDecodeTests.swift).

Run by hand, never in CI, from the repository root, with the pinned venv (see tools/make_fixtures.py):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_tiled_fixtures.py

Deterministic (fixed seed, one CPU thread). The tiny VAE's own tile sizes (sample_size 64, so
8 latents) would not tile the small latents below, so the script sets small tiles on the model,
as a user of diffusers may: tile_sample_min_size 32, tile_latent_min_size 4, tile_overlap_factor
0.25 (diffusers' default). Then the overlap is int(4 * 0.75) = 3 latents, the blend extent
int(32 * 0.25) = 8 pixels and the row limit 32 - 8 = 24 pixels. The settings are in __metadata__.

Tensors (f32):
  wide.latents [1,4,12,16]    random normal; tiles start every 3 latents, so the edge tiles are
                              3 rows high and 1 column wide (4 distinct tile shapes)
  wide.decoded [1,3,96,128]   vae.tiled_decode(latents).sample
  small.latents [1,4,6,5]     random normal (edge tiles 3 high, 2 wide)
  small.decoded [1,3,48,40]   vae.tiled_decode(latents).sample
  encode.wide.image [1,3,96,128]     uniform in [-1, 1]; 32-pixel tiles every 24 pixels, the
                                     edge tiles 24 high and 8 wide
  encode.wide.moments [1,8,12,16]    vae.encode(image).latent_dist.parameters (tiled: the mean,
                                     then the unclamped log-variance, blended over 1 latent, each
                                     tile cropped to 3 latents)
  encode.small.image [1,3,40,72], encode.small.moments [1,8,5,9]
"""

import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import save_safetensors, set_up  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE_FOLDER = os.path.join(ROOT, "Tests", "Fixtures", "tiny-sd", "vae")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "tiled-vae-reference.safetensors")

TILE_SAMPLE = 32
TILE_LATENT = 4
OVERLAP = 0.25


def main():
    set_up()
    vae = AutoencoderKL.from_pretrained(VAE_FOLDER, torch_dtype=torch.float32, local_files_only=True).eval()
    vae.enable_tiling()
    vae.tile_sample_min_size = TILE_SAMPLE
    vae.tile_latent_min_size = TILE_LATENT
    vae.tile_overlap_factor = OVERLAP
    gen = torch.Generator().manual_seed(1234)
    tensors = {}
    with torch.no_grad():
        for name, shape in [("wide", (1, 4, 12, 16)), ("small", (1, 4, 6, 5))]:
            z = torch.randn(shape, generator=gen, dtype=torch.float32)
            out = vae.decode(z).sample  # tiles: the latent is larger than tile_latent_min_size
            assert torch.equal(out, vae.tiled_decode(z).sample)
            untiled = vae.decoder(vae.post_quant_conv(z))
            assert out.shape == untiled.shape, (out.shape, untiled.shape)
            assert not torch.allclose(out, untiled), "tiling changed nothing: the fixture would not test it"
            tensors[f"{name}.latents"] = z.contiguous()
            tensors[f"{name}.decoded"] = out.contiguous()
        # Tiled encoding (diffusers' _tiled_encode): the moments (mean, then the unclamped
        # log-variance) of images larger than one 32-pixel tile.
        for name, shape in [("encode.wide", (1, 3, 96, 128)), ("encode.small", (1, 3, 40, 72))]:
            x = torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1
            moments = vae.encode(x).latent_dist.parameters
            assert torch.equal(moments, vae._tiled_encode(x))
            untiled = vae.quant_conv(vae.encoder(x))
            assert moments.shape == untiled.shape, (moments.shape, untiled.shape)
            assert not torch.allclose(moments, untiled), "tiling changed nothing: the fixture would not test it"
            tensors[f"{name}.image"] = x.contiguous()
            tensors[f"{name}.moments"] = moments.contiguous()
    metadata = {
        "tile_sample_min_size": str(TILE_SAMPLE),
        "tile_latent_min_size": str(TILE_LATENT),
        "tile_overlap_factor": str(OVERLAP),
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}, sort_keys=True),
        "notes": "AutoencoderKL tiled decode and encode of Tests/Fixtures/tiny-sd/vae (float32), made by tools/make_tiled_fixtures.py",
    }
    save_safetensors(tensors, OUT, metadata)
    print(OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
