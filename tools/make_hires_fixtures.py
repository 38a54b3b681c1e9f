#!/usr/bin/env python3
"""Generates the committed fixtures for the hires fix: AUTOMATIC1111's two-pass recipe built from
diffusers' pipelines. The first pass is StableDiffusionPipeline at the base size with
output_type "latent"; the latents are upscaled with torch.nn.functional.interpolate (A1111's
"Latent" upscaler is bilinear without antialiasing, "Latent (nearest)" is nearest); the second pass
is StableDiffusionImg2ImgPipeline from those latents (4 channels: used as they are, then noised to
`strength`) with the same prompt, guidance and seed (a generator seeded anew).

Run by hand, never in CI, from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_hires_fixtures.py

Writes Tests/Fixtures/hires-reference.safetensors: per case <case>.latents (the second pass's) and
<case>.image (uint8), with the request as JSON in the metadata under the case's name.
"""

import json
import os

import numpy as np
import torch
from diffusers import (EulerDiscreteScheduler, PNDMScheduler, StableDiffusionImg2ImgPipeline,
                       StableDiffusionPipeline)
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
MODEL = os.path.join(ROOT, "tiny-sd")
OUT = os.path.join(ROOT, "hires-reference.safetensors")

SCHEDULERS = {"pndm": PNDMScheduler.from_config, "euler": EulerDiscreteScheduler.from_config}
MODES = {"latent": dict(mode="bilinear", antialias=False), "latent-nearest": dict(mode="nearest")}
# "lanczos": the first pass decoded to an 8-bit image, resized with Pillow's LANCZOS, encoded again
# by the img2img pipeline (A1111's pixel upscalers; Lanczos is the one without a network).
CASES = [
    # name, scheduler, prompt, negative, steps, guidance, seed, scale, upscaler, hires steps, strength
    ("euler-bilinear", "euler", "a red circle on a blue background", "blurry", 6, 7.0, 41, 1.5, "latent", 6, 0.6),
    ("pndm-nearest", "pndm", "a photo of an astronaut riding a horse on mars", None, 5, 7.5, 42, 2.0, "latent-nearest", 8, 0.5),
    ("euler-lanczos", "euler", "a red circle on a blue background", None, 5, 6.0, 43, 1.5, "lanczos", 5, 0.55),
]


def main():
    torch.set_num_threads(1)
    base = StableDiffusionPipeline.from_pretrained(MODEL, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    base.set_progress_bar_config(disable=True)
    i2i = StableDiffusionImg2ImgPipeline(**base.components)
    i2i.set_progress_bar_config(disable=True)
    model_config = base.scheduler.config
    tensors, meta = {}, {"diffusers": __import__("diffusers").__version__, "torch": torch.__version__,
                         "generator": "tools/make_hires_fixtures.py"}
    for name, sched, prompt, negative, steps, guidance, seed, scale, upscaler, hires_steps, strength in CASES:
        base.scheduler = SCHEDULERS[sched](model_config)
        i2i.scheduler = SCHEDULERS[sched](model_config)
        common = dict(prompt=prompt, negative_prompt=negative, guidance_scale=guidance)
        if upscaler == "lanczos":
            first = base(**common, num_inference_steps=steps, height=64, width=64,
                         generator=torch.Generator("cpu").manual_seed(seed), output_type="pil").images[0]
            upscaled = first.resize((int(64 * scale) // 8 * 8, int(64 * scale) // 8 * 8), Image.LANCZOS)
        else:
            latents = base(**common, num_inference_steps=steps, height=64, width=64,
                           generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
            h, w = latents.shape[-2:]
            size = (int(h * scale), int(w * scale))
            upscaled = torch.nn.functional.interpolate(latents, size=size, **MODES[upscaler])
        second = dict(**common, image=upscaled, num_inference_steps=hires_steps, strength=strength)
        out = i2i(**second, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        images = i2i(**second, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        tensors[f"{name}.latents"] = out.contiguous()
        tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
        meta[name] = json.dumps(dict(scheduler=sched, prompt=prompt, negative_prompt=negative, steps=steps,
                                     guidance=guidance, seed=seed, width=64, height=64, scale=scale,
                                     upscaler=upscaler, hires_steps=hires_steps, strength=strength))
        print(name, tuple(out.shape), images.shape)
    save_file(tensors, OUT, metadata=meta)
    print(OUT, os.path.getsize(OUT))


if __name__ == "__main__":
    main()
