#!/usr/bin/env python3
"""Generates the committed ControlNet fixtures: tiny ControlNets for tiny-sd (random weights, the
zero convolutions included, so every residual is non-zero) and StableDiffusionControlNetPipeline's
images with them.

Run by hand, never in CI, from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_controlnet_fixtures.py

Writes Tests/Fixtures/tiny-controlnet-a/ and tiny-controlnet-b/ (ControlNetModel folders in f16:
tiny-sd's UNet encoder half, conditioning_embedding_out_channels (4, 4, 8, 8), so a 64x64 control
image meets the 8x8 latent), Tests/Fixtures/images/control64.png (a drawn edge map) and
Tests/Fixtures/controlnet-reference.safetensors with, per case, <case>.latents and <case>.image
(uint8) and the request as JSON in the metadata:
  single      one ControlNet, conditioning_scale 0.8, the model's PNDM, 6 steps
  window      one ControlNet active for control_guidance_start 0.2 .. end 0.6 only (Euler)
  multi       two ControlNets (MultiControlNetModel) with scales 0.7 and 0.5, the same image
  nocfg       one ControlNet, guidance 1 (no unconditional batch)
and Tests/Fixtures/tiny-controlnet-xl/ (from tiny-sdxl's UNet, with its added text-and-size
embedding) with the case
  xl          StableDiffusionXLControlNetPipeline on tiny-sdxl, scale 0.9, no negative prompt (zeros)
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from diffusers import (ControlNetModel, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionControlNetPipeline,
                       StableDiffusionXLControlNetPipeline, UNet2DConditionModel)
from PIL import Image, ImageDraw
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
MODEL = os.path.join(ROOT, "tiny-sd")
CONTROL_IMAGE = os.path.join(ROOT, "images", "control64.png")
OUT = os.path.join(ROOT, "controlnet-reference.safetensors")
SEEDS = {"tiny-controlnet-a": 6161, "tiny-controlnet-b": 6262}
SDXL_MODEL = os.path.join(ROOT, "tiny-sdxl")
SEED_XL = 6363
CASES = [
    # name, controlnets, scales, start, end, scheduler, prompt, negative, steps, guidance, seed
    ("single", ["tiny-controlnet-a"], [0.8], [0.0], [1.0], "pndm", "a photo of an astronaut riding a horse on mars", "low quality", 6, 7.5, 51),
    ("window", ["tiny-controlnet-a"], [1.0], [0.2], [0.6], "euler", "a red circle", "blurry", 5, 6.0, 52),
    ("multi", ["tiny-controlnet-a", "tiny-controlnet-b"], [0.7, 0.5], [0.0, 0.0], [1.0, 1.0], "pndm", "a landscape", None, 4, 7.5, 53),
    ("nocfg", ["tiny-controlnet-b"], [1.0], [0.0], [1.0], "euler", "a blue square", None, 4, 1.0, 54),
]


def make_control_image():
    img = Image.new("RGB", (64, 64), (0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((12, 10, 44, 42), outline=(255, 255, 255), width=2)
    d.line((4, 56, 60, 50), fill=(255, 255, 255), width=1)
    img.save(CONTROL_IMAGE)


def make_controlnet(name, model=MODEL, seed=None):
    unet = UNet2DConditionModel.from_pretrained(os.path.join(model, "unet"), dtype=torch.float32, local_files_only=True)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 4, 8, 8))
    base.randomise(controlnet, seed or SEEDS[name])
    controlnet.eval()
    folder = os.path.join(ROOT, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    controlnet.to(torch.float16).save_pretrained(folder, safe_serialization=True)


def main():
    torch.set_num_threads(1)
    make_control_image()
    for name in SEEDS:
        make_controlnet(name)
    nets = {n: ControlNetModel.from_pretrained(os.path.join(ROOT, n), dtype=torch.float32, local_files_only=True) for n in SEEDS}
    control = Image.open(CONTROL_IMAGE).convert("RGB")
    tensors, meta = {}, {"diffusers": __import__("diffusers").__version__, "torch": torch.__version__,
                         "generator": "tools/make_controlnet_fixtures.py"}
    for name, names, scales, starts, ends, sched, prompt, negative, steps, guidance, seed in CASES:
        controlnet = nets[names[0]] if len(names) == 1 else [nets[n] for n in names]
        pipe = StableDiffusionControlNetPipeline.from_pretrained(MODEL, controlnet=controlnet, dtype=torch.float32,
                                                                 safety_checker=None, requires_safety_checker=False,
                                                                 local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        if sched == "euler":
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        single = len(names) == 1
        kwargs = dict(prompt=prompt, negative_prompt=negative, image=control if single else [control] * len(names),
                      height=64, width=64, num_inference_steps=steps, guidance_scale=guidance,
                      controlnet_conditioning_scale=scales[0] if single else scales,
                      control_guidance_start=starts[0] if single else starts, control_guidance_end=ends[0] if single else ends)
        latents = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        images = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        tensors[f"{name}.latents"] = latents.contiguous()
        tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
        meta[name] = json.dumps(dict(controlnets=names, scales=scales, starts=starts, ends=ends, scheduler=sched,
                                     prompt=prompt, negative_prompt=negative, steps=steps, guidance=guidance, seed=seed,
                                     control="images/control64.png"))
        print(name, tuple(latents.shape), float(latents.abs().max()))
    # The ControlNet changes the image: the same request without it differs.
    plain = StableDiffusionControlNetPipeline.from_pretrained(MODEL, controlnet=nets["tiny-controlnet-a"], dtype=torch.float32,
                                                              safety_checker=None, requires_safety_checker=False,
                                                              local_files_only=True)
    plain.set_progress_bar_config(disable=True)
    off = plain(prompt=CASES[0][6], negative_prompt=CASES[0][7], image=control, height=64, width=64, num_inference_steps=6,
                guidance_scale=7.5, controlnet_conditioning_scale=0.0, generator=torch.Generator("cpu").manual_seed(51),
                output_type="latent").images
    assert (off - tensors["single.latents"]).abs().max() > 0.05
    make_controlnet("tiny-controlnet-xl", SDXL_MODEL, SEED_XL)
    net_xl = ControlNetModel.from_pretrained(os.path.join(ROOT, "tiny-controlnet-xl"), dtype=torch.float32, local_files_only=True)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(SDXL_MODEL, controlnet=net_xl, dtype=torch.float32,
                                                               local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(prompt="a photo of an astronaut riding a horse on mars", image=control, height=64, width=64,
                  num_inference_steps=5, guidance_scale=5.0, controlnet_conditioning_scale=0.9)
    latents = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(55), output_type="latent").images
    images = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(55), output_type="np").images
    tensors["xl.latents"] = latents.contiguous()
    tensors["xl.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
    meta["xl"] = json.dumps(dict(controlnets=["tiny-controlnet-xl"], scales=[0.9], starts=[0.0], ends=[1.0], scheduler="euler",
                                 prompt=kwargs["prompt"], negative_prompt=None, steps=5, guidance=5.0, seed=55,
                                 control="images/control64.png", model="tiny-sdxl"))
    print("xl", tuple(latents.shape), float(latents.abs().max()))
    save_file(tensors, OUT, metadata=meta)
    print(OUT, os.path.getsize(OUT))


if __name__ == "__main__":
    main()
