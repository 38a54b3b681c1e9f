#!/usr/bin/env python3
"""Generates the committed fixtures for single-file ControlNets: tiny-controlnet-a (from
tools/make_controlnet_fixtures.py) written as one file with the original ControlNet names, as
lllyasviel's control_*.safetensors files name them, and diffusers' images with it.

The original ControlNet is the UNet's encoder under `control_model.` with the UNet's original names
(time_embed, input_blocks, middle_block), plus:
  input_hint_block.0          controlnet_cond_embedding.conv_in
  input_hint_block.2k+2       controlnet_cond_embedding.blocks.k   (odd indices are SiLUs)
  input_hint_block.2n+2       controlnet_cond_embedding.conv_out  (n blocks; 14 for the usual 6)
  zero_convs.k.0              controlnet_down_blocks.k
  middle_block_out.0          controlnet_mid_block
(diffusers' convert_controlnet_checkpoint reads them so). SDXL ControlNet single files have no
original layout: they are diffusers' names in one file (diffusers detects them by
controlnet_cond_embedding.conv_in.weight), which tiny-controlnet-xl/diffusion_pytorch_model.safetensors
already is; this script checks that from_single_file reads it back too.

Run by hand, never in CI, from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_controlnet_single_file_fixtures.py

Writes Tests/Fixtures/tiny-controlnet-a.safetensors (f16) and
Tests/Fixtures/controlnet-single-file-reference.safetensors with the case single-file (the
controlnet-reference "single" request, with ControlNetModel.from_single_file(file,
config=tiny-controlnet-a)): single-file.latents, single-file.image (uint8) and the request as JSON.
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
MODEL = os.path.join(ROOT, "tiny-sd")
FOLDER = os.path.join(ROOT, "tiny-controlnet-a")
SINGLE = os.path.join(ROOT, "tiny-controlnet-a.safetensors")
XL_FOLDER = os.path.join(ROOT, "tiny-controlnet-xl")
OUT = os.path.join(ROOT, "controlnet-single-file-reference.safetensors")


def controlnet_to_original(state, config):
    """diffusers ControlNetModel names -> the original ControlNet's (control_model.*)."""
    blocks = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    out, unet_part = {}, {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "controlnet_cond_embedding":
            if parts[1] == "conv_in":
                name = "input_hint_block.0." + ".".join(parts[2:])
            elif parts[1] == "conv_out":
                name = f"input_hint_block.{2 * blocks + 2}." + ".".join(parts[2:])
            else:
                name = f"input_hint_block.{2 * int(parts[2]) + 2}." + ".".join(parts[3:])
        elif parts[0] == "controlnet_down_blocks":
            name = f"zero_convs.{parts[1]}.0." + ".".join(parts[2:])
        elif parts[0] == "controlnet_mid_block":
            name = "middle_block_out.0." + ".".join(parts[1:])
        else:
            unet_part[key] = value
            continue
        out["control_model." + name] = value
    for key, value in base.unet_to_ldm(unet_part, config).items():
        assert key.startswith("model.diffusion_model."), key
        out["control_model." + key[len("model.diffusion_model."):]] = value
    assert len(out) == len(state)
    return out


def main():
    torch.set_num_threads(1)
    folder = ControlNetModel.from_pretrained(FOLDER, dtype=torch.float32, local_files_only=True)
    stored = load_file(os.path.join(FOLDER, "diffusion_pytorch_model.safetensors"))  # f16, as committed
    original = controlnet_to_original(stored, dict(folder.config))
    assert "control_model.input_hint_block.14.weight" in original and "control_model.zero_convs.0.0.weight" in original
    base.save_safetensors({k: v.contiguous() for k, v in sorted(original.items())}, SINGLE,
                          metadata={"format": "pt", "lumen_fixture": "tiny-controlnet-a, original names; tools/make_controlnet_single_file_fixtures.py"})
    single = ControlNetModel.from_single_file(SINGLE, config=FOLDER, local_files_only=True, torch_dtype=torch.float32)
    base.assert_same_state("from_single_file", single.state_dict(), base.float_state(folder))
    # SDXL: the diffusers-named file of the folder, read as a single file.
    xl = ControlNetModel.from_single_file(os.path.join(XL_FOLDER, "diffusion_pytorch_model.safetensors"), config=XL_FOLDER,
                                          local_files_only=True, torch_dtype=torch.float32)
    base.assert_same_state("from_single_file xl", xl.state_dict(),
                           base.float_state(ControlNetModel.from_pretrained(XL_FOLDER, dtype=torch.float32, local_files_only=True)))

    ref = load_file(os.path.join(ROOT, "controlnet-reference.safetensors"))
    control = Image.open(os.path.join(ROOT, "images", "control64.png")).convert("RGB")
    pipe = StableDiffusionControlNetPipeline.from_pretrained(MODEL, controlnet=single, dtype=torch.float32, safety_checker=None,
                                                             requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    request = dict(prompt="a photo of an astronaut riding a horse on mars", negative_prompt="low quality", steps=6,
                   guidance=7.5, seed=51, scheduler="pndm", controlnets=["tiny-controlnet-a.safetensors"], scales=[0.8],
                   starts=[0.0], ends=[1.0], control="images/control64.png")
    kwargs = dict(prompt=request["prompt"], negative_prompt=request["negative_prompt"], image=control, height=64, width=64,
                  num_inference_steps=6, guidance_scale=7.5, controlnet_conditioning_scale=0.8)
    latents = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(51), output_type="latent").images
    images = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(51), output_type="np").images
    # The same weights give the folder's image exactly.
    assert torch.equal(latents, ref["single.latents"]), float((latents - ref["single.latents"]).abs().max())
    tensors = {"single-file.latents": latents.contiguous(),
               "single-file.image": torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()}
    base.save_safetensors(tensors, OUT, metadata={"single-file": json.dumps(request), "diffusers": __import__("diffusers").__version__,
                                                  "torch": torch.__version__, "generator": "tools/make_controlnet_single_file_fixtures.py"})
    print(SINGLE, os.path.getsize(SINGLE), OUT, os.path.getsize(OUT))


if __name__ == "__main__":
    main()
