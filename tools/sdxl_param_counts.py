#!/usr/bin/env python3
"""Parameter counts of the full SDXL base architecture, from configs alone (the configs of
stabilityai/stable-diffusion-xl-base-1.0, fields that matter), built on PyTorch's meta device:
nothing is allocated or downloaded. Writes the configs (JSON only) and the counts to
Tests/Fixtures/sdxl-configs/, for SDXLArchitectureTests, which builds the same networks' graphs in
Swift and counts their parameters (shapes only, without 5 GB of weights).

Run by hand (never in CI), from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/sdxl_param_counts.py
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402
import sd15_param_counts as sd15  # noqa: E402

REPO = sd15.REPO
OUT_DIR = os.path.join(REPO, "Tests", "Fixtures", "sdxl-configs")

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
    addition_embed_type_num_heads=64, addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SDXL_VAE = dict(sd15.SD15_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_TEXT = sd15.SD15_TEXT
SDXL_TEXT_2 = dict(sd15.SD15_TEXT, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, hidden_act="gelu", projection_dim=1280)


def count(module):
    return sum(p.numel() for p in module.parameters())


def main():
    with torch.device("meta"):
        nets = {"unet": UNet2DConditionModel(**SDXL_UNET), "vae": AutoencoderKL(**SDXL_VAE),
                "text_encoder": CLIPTextModel(CLIPTextConfig(**SDXL_TEXT)),
                "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2))}
    counts = {name: count(m) for name, m in nets.items()}
    nets["unet"].save_config(os.path.join(OUT_DIR, "unet"))
    nets["vae"].save_config(os.path.join(OUT_DIR, "vae"))
    for name, arch in (("text_encoder", "CLIPTextModel"), ("text_encoder_2", "CLIPTextModelWithProjection")):
        os.makedirs(os.path.join(OUT_DIR, name), exist_ok=True)
        nets[name].config.architectures = [arch]
        nets[name].config.save_pretrained(os.path.join(OUT_DIR, name))
    with open(os.path.join(OUT_DIR, "param_counts.json"), "w") as f:
        json.dump(counts, f, indent=2, sort_keys=True)
        f.write("\n")
    for name, n in counts.items():
        print(f"SDXL {name:15s} {n:>14,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
