#!/usr/bin/env python3
"""Generates the committed fixtures for the mask's blur and crop, as diffusers does them:

  - mask blur: `VaeImageProcessor.blur(mask, blur_factor)` (Pillow's ImageFilter.GaussianBlur, three
    extended box blurs per axis), which diffusers' inpainting docs apply to the mask before the
    pipeline call (`pipe.mask_processor.blur(mask, blur_factor=...)`); the pipeline then binarizes
    the blurred mask at 0.5 for the latents, and with `padding_mask_crop` blends with it in
    `apply_overlay`;
  - padding_mask_crop: `StableDiffusionInpaintPipeline(padding_mask_crop=N)`: the mask's bounding
    box plus N pixels, widened to the output's aspect ratio (`get_crop_region`), the image and mask
    cropped to it and resized to the output size (`resize_mode="fill"`, Pillow's Lanczos), inpainted,
    then the result resized back into the box and laid under the original with the mask
    (`apply_overlay`).

Run by hand, never in CI, from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_mask_fixtures.py

It writes Tests/Fixtures/images/mask-crop96x80.png and mask-tall96x80.png (8-bit grey masks for
images/canny-shapes.png) and Tests/Fixtures/mask-reference.safetensors with:
  blur.<case>.input / blur.<case>   uint8 [H, W] or [H, W, 3]: Pillow's GaussianBlur of the input
  <case>.latents, <case>.image      a masked request with a blurred mask (tiny-sd), as the
                                    inpainting fixtures store them
  <case>.crop                       int32 [4]: get_crop_region's (x1, y1, x2, y2)
  <case>.init, <case>.mask          uint8: the cropped image and mask resized to the output size, as
                                    the pipeline's preprocess makes them (before normalising)
  <case>.raw                        uint8 [N, h, w, 3]: the generated images before apply_overlay
  <case>.image                      uint8 [N, H, W, 3]: the pipeline's images (PIL), overlaid
with each request as JSON in the metadata under the case's name.

SDXL's `padding_mask_crop` (`StableDiffusionXLInpaintPipeline`; its time ids take the output size
as original and target size) goes to Tests/Fixtures/mask-sdxl-reference.safetensors, with the same
<case>.crop/.init/.mask/.raw/.image entries: `tiny-sdxl` (4-channel UNet) with a blurred mask, and
`tiny-sdxl-inpaint` (9-channel UNet) at 64x32.
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import (EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionInpaintPipeline,
                       StableDiffusionXLInpaintPipeline)
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
OUT = os.path.join(ROOT, "mask-reference.safetensors")
OUT_XL = os.path.join(ROOT, "mask-sdxl-reference.safetensors")
SCHEDULERS = {"pndm": PNDMScheduler.from_config, "euler-a": EulerAncestralDiscreteScheduler.from_config,
              "euler": EulerDiscreteScheduler.from_config}

BLUR_CASES = [
    # name, input, radius
    ("mask-r1", "mask64", 1.0),
    ("mask-r2.5", "mask64", 2.5),
    ("mask-r4", "mask64", 4.0),
    ("mask-r12", "mask64", 12.0),
    ("mask-r100", "mask64", 100.0),  # wider than the image: the edge pixels repeat past both ends
    ("noise-r0.6", "noise", 0.6),
    ("noise-r3", "noise", 3.0),
    ("rgb-r2", "rgb", 2.0),
]

# Masked image-to-image on tiny-sd with a blurred mask (the blur moves the 0.5 threshold's edge).
BLUR_PIPELINE_CASES = [
    # name, radius, scheduler, prompt, negative, steps, guidance, strength, seed
    ("blur3-pndm", 3.0, "pndm", "a red circle", "blurry", 6, 7.5, 0.75, 41),
]

CROP_CASES = [
    # name, model, mask png, padding, blur, width, height, scheduler, prompt, negative, steps, guidance, strength, seed, count
    ("crop-blur", "tiny-sd", "mask-crop96x80.png", 4, 2.0, 64, 64, "pndm", "a red circle", "blurry", 6, 7.5, 0.75, 42, 1),
    ("crop-fill9", "tiny-sd-inpaint", "mask-tall96x80.png", 4, 0.0, 64, 32, "euler-a", "a blue square", None, 5, 6.0, 1.0, 43, 2),
]

# The same through StableDiffusionXLInpaintPipeline (negative None: SDXL's zero unconditional inputs).
CROP_CASES_XL = [
    ("xl-crop-blur", "tiny-sdxl", "mask-crop96x80.png", 6, 2.0, 64, 64, "euler", "a red circle", "blurry", 5, 5.0, 0.7, 44, 1),
    ("xl-crop-fill9", "tiny-sdxl-inpaint", "mask-tall96x80.png", 4, 0.0, 64, 32, "euler-a", "a blue square", None, 5, 5.0, 1.0, 45, 2),
]


def make_masks():
    m = np.zeros((80, 96), dtype=np.uint8)
    m[30:46, 50:71] = 255   # a 21x16 box: the crop is widened to the output's 1:1
    m[48:51, 52:60] = 160   # grey: repainted (>= 0.5), and a soft edge in the overlay
    m[52:54, 52:60] = 60    # grey: kept in the latents, but inside the crop box and blended
    Image.fromarray(m, "L").save(os.path.join(ROOT, "images", "mask-crop96x80.png"))
    t = np.zeros((80, 96), dtype=np.uint8)
    t[6:74, 40:51] = 255    # tall and narrow: widened to 2:1 past the image's width, then filled
    Image.fromarray(t, "L").save(os.path.join(ROOT, "images", "mask-tall96x80.png"))


def u8(images):
    return torch.from_numpy(np.stack([np.asarray(i.convert("RGB")) for i in images])).contiguous()


def crop_cases(cases, pipeline, tensors, meta):
    """Runs `padding_mask_crop` requests on images/canny-shapes.png, recording diffusers'
    intermediates (the crop box, the resized crop of image and mask, the images before the overlay)."""
    shapes = Image.open(os.path.join(ROOT, "images", "canny-shapes.png")).convert("RGB")
    for (name, model, mask_png, padding, blur, width, height, sched, prompt, negative, steps, guidance, strength, seed,
         count) in cases:
        pipe, config = pipeline(model)
        pipe.scheduler = SCHEDULERS[sched](config)
        mask = Image.open(os.path.join(ROOT, "images", mask_png))
        if blur > 0:
            mask = pipe.mask_processor.blur(mask, blur_factor=blur)
        crop = pipe.mask_processor.get_crop_region(mask, width, height, pad=padding)
        init = pipe.image_processor.resize(shapes.crop(crop), height, width, resize_mode="fill").convert("RGB")
        mask_in = pipe.mask_processor.resize(mask.crop(crop), height, width, resize_mode="fill").convert("L")
        # The same as the pipeline's own preprocessing, before it normalises.
        pre = pipe.image_processor.preprocess(shapes, height=height, width=width, crops_coords=crop, resize_mode="fill")
        assert torch.equal(pre, torch.from_numpy(np.asarray(init).astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1)
        raw = []
        overlay = pipe.image_processor.apply_overlay

        def recording(m, original, image, coords, overlay=overlay, raw=raw):
            raw.append(image.copy())
            return overlay(m, original, image, coords)

        pipe.image_processor.apply_overlay = recording
        images = pipe(prompt=prompt, negative_prompt=negative, image=shapes, mask_image=mask, height=height, width=width,
                      num_inference_steps=steps, guidance_scale=guidance, strength=strength, num_images_per_prompt=count,
                      padding_mask_crop=padding, generator=torch.Generator("cpu").manual_seed(seed)).images
        del pipe.image_processor.apply_overlay
        assert len(raw) == count and raw[0].size == (width, height) and images[0].size == shapes.size
        tensors[f"{name}.crop"] = torch.tensor(crop, dtype=torch.int32)
        tensors[f"{name}.init"] = torch.from_numpy(np.asarray(init).copy())
        tensors[f"{name}.mask"] = torch.from_numpy(np.asarray(mask_in).copy())
        tensors[f"{name}.raw"] = u8(raw)
        tensors[f"{name}.image"] = u8(images)
        meta[name] = json.dumps(dict(scheduler=sched, prompt=prompt, negative_prompt=negative, steps=steps, guidance=guidance,
                                     strength=strength, seed=seed, count=count, width=width, height=height,
                                     init="images/canny-shapes.png", mask="images/" + mask_png, model=model,
                                     mask_blur=blur, mask_crop=padding))
        print(name, "crop", crop, "output", images[0].size)


def main():
    torch.set_num_threads(1)
    make_masks()
    tensors, meta = {}, {"diffusers": __import__("diffusers").__version__, "torch": torch.__version__,
                         "pillow": Image.__version__, "generator": "tools/make_mask_fixtures.py"}

    # 1. Pillow's Gaussian blur through diffusers' VaeImageProcessor.blur.
    rng = np.random.default_rng(19)
    inputs = {"mask64": np.asarray(Image.open(os.path.join(ROOT, "images", "mask64.png"))),
              "noise": rng.integers(0, 256, (23, 37), dtype=np.uint8),
              "rgb": rng.integers(0, 256, (19, 26, 3), dtype=np.uint8)}
    for name, source, radius in BLUR_CASES:
        x = inputs[source]
        image = Image.fromarray(x, "L" if x.ndim == 2 else "RGB")
        blurred = np.asarray(VaeImageProcessor.blur(image, blur_factor=radius))
        tensors[f"blur.{name}.input"] = torch.from_numpy(x.copy())
        tensors[f"blur.{name}"] = torch.from_numpy(blurred.copy())
        meta[f"blur.{name}"] = json.dumps(dict(radius=radius, input=source))
        print("blur", name, x.shape, int(np.abs(blurred.astype(int) - x).max()))

    init64 = Image.open(os.path.join(ROOT, "images", "init64.png")).convert("RGB")
    mask64 = Image.open(os.path.join(ROOT, "images", "mask64.png"))
    pipes = {}

    def pipeline(model):
        if model not in pipes:
            p = StableDiffusionInpaintPipeline.from_pretrained(os.path.join(ROOT, model), dtype=torch.float32, safety_checker=None,
                                                               requires_safety_checker=False, local_files_only=True)
            p.set_progress_bar_config(disable=True)
            pipes[model] = (p, p.scheduler.config)
        return pipes[model]

    # 2. A blurred mask through the pipeline.
    for name, radius, sched, prompt, negative, steps, guidance, strength, seed in BLUR_PIPELINE_CASES:
        pipe, config = pipeline("tiny-sd")
        pipe.scheduler = SCHEDULERS[sched](config)
        mask = pipe.mask_processor.blur(mask64, blur_factor=radius)
        kwargs = dict(prompt=prompt, negative_prompt=negative, image=init64, mask_image=mask, height=64, width=64,
                      num_inference_steps=steps, guidance_scale=guidance, strength=strength)
        tensors[f"{name}.latents"] = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images.contiguous()
        images = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
        meta[name] = json.dumps(dict(scheduler=sched, prompt=prompt, negative_prompt=negative, steps=steps, guidance=guidance,
                                     strength=strength, seed=seed, count=1, init="images/init64.png", mask="images/mask64.png",
                                     mask_blur=radius))
        print(name, "done")

    # 3. padding_mask_crop, with the images before the overlay recorded on the way.
    crop_cases(CROP_CASES, pipeline, tensors, meta)
    base.save_safetensors(tensors, OUT, metadata=meta)
    print(OUT, os.path.getsize(OUT))

    # 4. SDXL's padding_mask_crop.
    xl_pipes = {}

    def pipeline_xl(model):
        if model not in xl_pipes:
            p = StableDiffusionXLInpaintPipeline.from_pretrained(os.path.join(ROOT, model), dtype=torch.float32, local_files_only=True)
            p.set_progress_bar_config(disable=True)
            xl_pipes[model] = (p, p.scheduler.config)
        return xl_pipes[model]

    tensors_xl, meta_xl = {}, {k: v for k, v in meta.items() if k in ("diffusers", "torch", "pillow", "generator")}
    crop_cases(CROP_CASES_XL, pipeline_xl, tensors_xl, meta_xl)
    base.save_safetensors(tensors_xl, OUT_XL, metadata=meta_xl)
    print(OUT_XL, os.path.getsize(OUT_XL))


if __name__ == "__main__":
    main()
