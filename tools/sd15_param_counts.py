#!/usr/bin/env python3
"""Parameter counts of the full Stable Diffusion 1.5 architecture, from configs alone.

Run by hand (never in CI), from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/sd15_param_counts.py

(the venv is set up as described in tools/make_fixtures.py). The three networks are built on
PyTorch's meta device, so nothing is allocated and nothing is downloaded. The script asserts the
known counts and writes the configs (JSON only, no weights) to
Tests/Fixtures/sd15-configs/{unet,vae,text_encoder}/config.json, for the Swift test that builds the
full-size architecture with random weights from a config.

tools/make_fixtures.py runs this too.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "Tests", "Fixtures", "sd15-configs")

# The configs as the Stable Diffusion 1.5 diffusers folder ships them (fields that matter).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    attention_dropout=0.0,
    dropout=0.0,
    initializer_range=0.02,
    initializer_factor=1.0,
    # as the SD 1.5 folder ships them (inherited from OpenAI's CLIP config)
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

EXPECTED = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


def count(module):
    return sum(p.numel() for p in module.parameters())


def sd15_counts(write_configs=True):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    counts = {"unet": count(unet), "vae": count(vae), "text_encoder": count(text)}
    for name, n in counts.items():
        assert n == EXPECTED[name], f"SD 1.5 {name}: {n:,} parameters, expected {EXPECTED[name]:,}"
    if write_configs:
        unet.save_config(os.path.join(OUT_DIR, "unet"))
        vae.save_config(os.path.join(OUT_DIR, "vae"))
        os.makedirs(os.path.join(OUT_DIR, "text_encoder"), exist_ok=True)
        text.config.architectures = ["CLIPTextModel"]
        text.config.save_pretrained(os.path.join(OUT_DIR, "text_encoder"))
    return counts


def main():
    counts = sd15_counts()
    for name, n in counts.items():
        print(f"SD 1.5 {name:13s} {n:>13,} parameters (asserted)")
    print(f"configs written to {os.path.relpath(OUT_DIR, REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
