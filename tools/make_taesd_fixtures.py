"""Fixtures for TAESD (issue #20): a tiny random diffusers AutoencoderTiny, and its decoder's output
as the oracle. Run by hand with the pinned venv (never in CI), after make_fixtures.py:
    .venv-fixtures/bin/python tools/make_taesd_fixtures.py

Writes Tests/Fixtures/taesd/:
  tiny/                        AutoencoderTiny.save_pretrained: 4 latent channels, decoder blocks of 8
                               channels, 1, 2, 1, 1 deep (3 upsamplings: 8×8 latents → 64×64)
  tiny_decoder.safetensors     the same decoder weights in the original taesd_decoder layout (layer N+1
                               is diffusers' decoder.layers.N; layer 0 is the clamp)
  reference.safetensors        latents [1, 4, 8, 8] (SD-scaled magnitude, some beyond ±3 to exercise the
                               clamp) and AutoencoderTiny.decode(latents).sample [1, 3, 64, 64]
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch  # noqa: E402
from diffusers import AutoencoderTiny  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = os.path.join(base.FIXTURES, "taesd")


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    vae = AutoencoderTiny(latent_channels=4, encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                          num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 2, 1, 1))
    base.randomise(vae, 2020)
    vae.eval()
    vae.save_pretrained(os.path.join(OUT, "tiny"), safe_serialization=True)
    state = vae.state_dict()
    original = {}
    for k, v in state.items():
        if k.startswith("decoder.layers."):
            rest = k[len("decoder.layers."):]
            index, tail = rest.split(".", 1)
            original[f"{int(index) + 1}.{tail}"] = v.contiguous()
    save_file(original, os.path.join(OUT, "tiny_decoder.safetensors"))
    g = torch.Generator().manual_seed(7)
    latents = torch.randn(1, 4, 8, 8, generator=g) * 2.5
    assert latents.abs().max() > 3
    with torch.no_grad():
        sample = vae.decode(latents).sample
    base.save_safetensors({"latents": latents, "sample": sample}, os.path.join(OUT, "reference.safetensors"),
                          metadata={"what": "AutoencoderTiny.decode(latents).sample"})
    for root, _, files in os.walk(OUT):
        for f in sorted(files):
            print(os.path.join(root, f), os.path.getsize(os.path.join(root, f)))


if __name__ == "__main__":
    main()
