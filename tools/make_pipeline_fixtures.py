#!/usr/bin/env python3
"""Reference generations of the tiny fixture model with diffusers' own pipelines.

Run by hand (never in CI), after tools/make_fixtures.py:
    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_pipeline_fixtures.py
Writes Tests/Fixtures/pipeline-reference.safetensors: for each case the final latents (before
the VAE) and the uint8 image diffusers returns, plus the case's parameters in the metadata.
Pinned versions: tools/requirements-fixtures.txt.
"""
import json
import os

import numpy as np
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler, PNDMScheduler, StableDiffusionImg2ImgPipeline,
                       StableDiffusionPipeline)
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
MODEL = os.path.join(ROOT, "tiny-sd")

SCHEDULERS = {
    "pndm": lambda cfg: PNDMScheduler.from_config(cfg),
    "ddim": lambda cfg: DDIMScheduler.from_config(cfg),
    "euler": lambda cfg: EulerDiscreteScheduler.from_config(cfg),
    "euler-a": lambda cfg: EulerAncestralDiscreteScheduler.from_config(cfg),
    "dpmpp-2m": lambda cfg: DPMSolverMultistepScheduler.from_config(cfg),
    "dpmpp-2m-karras": lambda cfg: DPMSolverMultistepScheduler.from_config(cfg, use_karras_sigmas=True),
    "lcm": lambda cfg: LCMScheduler.from_config(cfg),
    "ddpm": lambda cfg: DDPMScheduler.from_config(cfg),
}

TXT2IMG = [
    # name, scheduler, prompt, negative, steps, guidance, width, height, seed, count
    # Every scheduler with classifier-free guidance and a negative prompt ...
    ("pndm-cfg", "pndm", "a photo of an astronaut riding a horse on mars", "low quality", 4, 7.5, 64, 64, 42, 1),
    ("euler-cfg", "euler", "a red circle on a blue background", "blurry", 5, 5.0, 64, 64, 7, 1),
    ("euler-a-cfg", "euler-a", "a red circle on a blue background", "green", 5, 7.5, 64, 64, 1234, 1),
    ("dpmpp-2m-cfg", "dpmpp-2m", "a small green square", "a triangle", 6, 6.0, 64, 64, 3, 1),
    ("dpmpp-2m-karras-two", "dpmpp-2m-karras", "two yellow triangles", "one", 4, 6.0, 64, 64, 99, 2),
    ("ddim-wide", "ddim", "a landscape", "portrait", 3, 7.5, 80, 48, 5, 1),
    ("lcm-cfg", "lcm", "a blue circle", "red", 4, 2.0, 64, 64, 11, 1),
    ("ddpm-cfg", "ddpm", "a white square", "black", 3, 7.5, 64, 64, 13, 1),
    # ... guidance 1.0 (one branch only), and tall sizes.
    ("dpmpp-2m-nocfg", "dpmpp-2m", "a small green square", "", 6, 1.0, 64, 64, 3, 1),
    ("lcm-nocfg-tall", "lcm", "a blue circle", "", 4, 1.0, 48, 96, 11, 1),
]

IMG2IMG = [
    # name, scheduler, prompt, steps, guidance, strength, seed
    ("img2img-euler-a", "euler-a", "a purple circle", 10, 7.5, 0.6, 21),
    ("img2img-ddim", "ddim", "a purple circle", 5, 7.5, 1.0, 22),
]


def main():
    torch.set_num_threads(2)
    tensors, meta = {}, {"diffusers": __import__("diffusers").__version__, "torch": torch.__version__}
    base = StableDiffusionPipeline.from_pretrained(MODEL, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    base.set_progress_bar_config(disable=True)
    # Every case starts from the model's own scheduler config: from_config on the previous case's
    # scheduler would carry its options (use_karras_sigmas, …) into the next one.
    model_config = base.scheduler.config
    for name, sched, prompt, negative, steps, guidance, width, height, seed, count in TXT2IMG:
        base.scheduler = SCHEDULERS[sched](model_config)
        kwargs = dict(prompt=prompt, negative_prompt=negative or None, num_inference_steps=steps,
                      guidance_scale=guidance, width=width, height=height, num_images_per_prompt=count)
        latents = base(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        images = base(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        tensors[f"{name}.latents"] = latents.contiguous()
        tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
        meta[name] = json.dumps(dict(scheduler=sched, prompt=prompt, negative_prompt=negative, steps=steps,
                                     guidance=guidance, width=width, height=height, seed=seed, count=count))
        print(name, tuple(latents.shape), float(latents.abs().max()))

    init = Image.open(os.path.join(ROOT, "images", "init64.png")).convert("RGB")
    i2i = StableDiffusionImg2ImgPipeline(**base.components)
    i2i.set_progress_bar_config(disable=True)
    for name, sched, prompt, steps, guidance, strength, seed in IMG2IMG:
        i2i.scheduler = SCHEDULERS[sched](model_config)
        kwargs = dict(prompt=prompt, image=init, num_inference_steps=steps, guidance_scale=guidance, strength=strength)
        latents = i2i(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        images = i2i(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        tensors[f"{name}.latents"] = latents.contiguous()
        tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
        meta[name] = json.dumps(dict(scheduler=sched, prompt=prompt, steps=steps, guidance=guidance,
                                     strength=strength, seed=seed, init="images/init64.png"))
        print(name, tuple(latents.shape), float(latents.abs().max()))
    out = os.path.join(ROOT, "pipeline-reference.safetensors")
    save_file(tensors, out, metadata=meta)
    os.chmod(out, 0o644)
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
