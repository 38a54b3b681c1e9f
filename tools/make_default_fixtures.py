#!/usr/bin/env python3
"""diffusers' images with every call argument left at its default, for Lumen's test that
`lumen generate` without --steps, --guidance and --strength draws them.

Run by hand, never in CI, after tools/make_fixtures.py and tools/make_sdxl_fixtures.py (the venv
of tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_default_fixtures.py

Writes Tests/Fixtures/defaults/:

  init.png, mask.png          a fixed 64×64 pattern and a rectangle mask (white: repaint)
  reference.safetensors       f32 images [1, 64, 64, 3] (numpy, [0, 1]) `image.<case>`, each call in
                              __metadata__ (the prompt, seed and files; nothing else is passed):
    sd, sd-img2img, sd-inpaint        tiny-sd with StableDiffusionPipeline / Img2Img / Inpaint
                                      (50 steps, guidance 7.5, strength 0.8 and 1.0)
    sdxl, sdxl-img2img, sdxl-inpaint  tiny-sdxl with the XL pipelines (50 steps; guidance 5.0, 5.0
                                      and 7.5; strength 0.3 and 0.9999)
    sd-controlnet-img2img, sd-controlnet-inpaint  tiny-sd with tiny-controlnet-a and
                                      images/control64.png in StableDiffusionControlNetImg2Img /
                                      InpaintPipeline (controlnet_conditioning_scale 0.8 and 0.5)
  The size is the model's default (64×64 for both), the init image's for image-to-image.
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

OUT = os.path.join(base.FIXTURES, "defaults")
PROMPT = "a small green square"
SEED = 5
FAMILIES = {"sd": ("tiny-sd", "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"),
            "sdxl": ("tiny-sdxl", "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")}


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    yy, xx = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([(xx * 4) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)).save(os.path.join(OUT, "init.png"))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:40] = 255
    Image.fromarray(mask).save(os.path.join(OUT, "mask.png"))
    init = Image.open(os.path.join(OUT, "init.png")).convert("RGB")
    mask_image = Image.open(os.path.join(OUT, "mask.png"))
    ref, meta = {}, {}
    for family, (folder, text, img2img, inpaint) in FAMILIES.items():
        pipe = getattr(diffusers, text).from_pretrained(os.path.join(base.FIXTURES, folder), dtype=torch.float32, local_files_only=True)
        assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
        calls = {family: (pipe, {}), family + "-img2img": (getattr(diffusers, img2img)(**pipe.components), dict(image=init)),
                 family + "-inpaint": (getattr(diffusers, inpaint)(**pipe.components), dict(image=init, mask_image=mask_image))}
        for name, (p, extra) in calls.items():
            image = p(PROMPT, **extra, generator=torch.Generator().manual_seed(SEED), output_type="np").images
            assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
            ref["image." + name] = torch.from_numpy(image).float().contiguous()
            meta[name] = json.dumps(dict(model=folder, prompt=PROMPT, seed=SEED,
                                         init="defaults/init.png" if "image" in extra else None,
                                         mask="defaults/mask.png" if "mask_image" in extra else None), sort_keys=True)
    controlnet = diffusers.ControlNetModel.from_pretrained(os.path.join(base.FIXTURES, "tiny-controlnet-a"), torch_dtype=torch.float32,
                                                           local_files_only=True)
    control = Image.open(os.path.join(base.FIXTURES, "images", "control64.png")).convert("RGB")
    for name, cls, extra in [("sd-controlnet-img2img", "StableDiffusionControlNetImg2ImgPipeline", dict(image=init)),
                             ("sd-controlnet-inpaint", "StableDiffusionControlNetInpaintPipeline", dict(image=init, mask_image=mask_image))]:
        p = getattr(diffusers, cls).from_pretrained(os.path.join(base.FIXTURES, "tiny-sd"), controlnet=controlnet, dtype=torch.float32,
                                                    local_files_only=True, safety_checker=None)
        image = p(PROMPT, **extra, control_image=control, generator=torch.Generator().manual_seed(SEED), output_type="np").images
        assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
        ref["image." + name] = torch.from_numpy(image).float().contiguous()
        meta[name] = json.dumps(dict(model="tiny-sd", prompt=PROMPT, seed=SEED, init="defaults/init.png",
                                     mask="defaults/mask.png" if "mask_image" in extra else None,
                                     control="tiny-controlnet-a:images/control64.png"), sort_keys=True)
    base.save_safetensors(ref, os.path.join(OUT, "reference.safetensors"), metadata={
        "format": "pt", "generator": "tools/make_default_fixtures.py", **meta,
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}, sort_keys=True)})
    for f in sorted(os.listdir(OUT)):
        p = os.path.join(OUT, f)
        os.chmod(p, 0o644)
        print(f"  {os.path.relpath(p, base.REPO):60s} {os.path.getsize(p):>8,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
