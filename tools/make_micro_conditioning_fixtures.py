#!/usr/bin/env python3
"""SDXL's size conditioning (original_size, crops_coords_top_left, target_size and their negative_
forms) as diffusers' pipelines draw it, for Lumen's tests.

Lumen always conditioned on the output's size, no crop. The pipelines differ on the negative rows:
StableDiffusionXLPipeline takes the negative sizes only when both negative_original_size and
negative_target_size are given; the img2img pipeline defaults each to the positive one and takes
the positive crop; a refiner (requires_aesthetics_score) takes the negative crop with the negative
aesthetic score. Run by hand, never in CI, after tools/make_sdxl_fixtures.py,
tools/make_refiner_fixtures.py and tools/make_default_fixtures.py (the venv of
tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_micro_conditioning_fixtures.py

Writes Tests/Fixtures/micro-conditioning-reference.safetensors: f32 images [1, 64, 64, 3] (numpy,
[0, 1]) `image.<case>`, the requests in __metadata__ (sizes as diffusers takes them, [height, width];
crops [top, left]; `model`, `init`, `strength`):

  txt2img              StableDiffusionXLPipeline on tiny-sdxl: every size and crop, positive and negative
  txt2img-one-negative the same with negative_original_size alone (diffusers then uses the positive ids)
  img2img              StableDiffusionXLImg2ImgPipeline on tiny-sdxl, defaults/init.png, strength 0.6:
                       original size, crop, negative original size and negative crop
  refiner              StableDiffusionXLImg2ImgPipeline on tiny-sdxl-refiner, the same arguments
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

OUT = os.path.join(base.FIXTURES, "micro-conditioning-reference.safetensors")
REQUEST = dict(prompt="a small green square", negative_prompt="a triangle", num_inference_steps=4, guidance_scale=5.0, seed=17)
FULL = dict(original_size=[48, 80], crops_coords_top_left=[4, 8], target_size=[64, 56],
            negative_original_size=[32, 40], negative_crops_coords_top_left=[2, 6], negative_target_size=[24, 16])
FROM_IMAGE = dict(original_size=[48, 80], crops_coords_top_left=[4, 8], negative_original_size=[32, 40],
                  negative_crops_coords_top_left=[2, 6])
CASES = {
    "txt2img": ("tiny-sdxl", "StableDiffusionXLPipeline", dict(FULL, height=64, width=64)),
    "txt2img-one-negative": ("tiny-sdxl", "StableDiffusionXLPipeline",
                             dict(original_size=[48, 80], negative_original_size=[32, 40], height=64, width=64)),
    "img2img": ("tiny-sdxl", "StableDiffusionXLImg2ImgPipeline", dict(FROM_IMAGE, init="defaults/init.png", strength=0.6)),
    "refiner": ("tiny-sdxl-refiner", "StableDiffusionXLImg2ImgPipeline", dict(FROM_IMAGE, init="defaults/init.png", strength=0.6)),
}


def main():
    base.set_up()
    ref, meta = {}, {}
    for name, (model, pipeline, extra) in CASES.items():
        pipe = getattr(diffusers, pipeline).from_pretrained(os.path.join(base.FIXTURES, model), dtype=torch.float32, local_files_only=True)
        request = dict(REQUEST, **extra, model=model)

        def draw(leave_out=()):
            args = {k: v for k, v in request.items() if k not in ("seed", "init", "model") + tuple(leave_out)}
            for k in list(args):
                if isinstance(args[k], list):
                    args[k] = tuple(args[k])
            if "init" in request:
                args["image"] = Image.open(os.path.join(base.FIXTURES, request["init"])).convert("RGB")
            return pipe(**args, generator=torch.Generator().manual_seed(request["seed"]), output_type="np").images

        image = draw()
        assert np.isfinite(image).all()
        ref["image." + name] = torch.from_numpy(image).float().contiguous()
        meta[name] = json.dumps(request, sort_keys=True)
        # The conditioning changes the image at this size; a lone negative original size changes nothing.
        assert np.abs(draw(leave_out=FULL.keys()) - image).max() > 4 / 255, name
        if name == "txt2img-one-negative":
            assert np.array_equal(draw(leave_out=["negative_original_size"]), image)
        if name == "img2img":  # the negative crop does not reach the negative rows here
            assert np.array_equal(draw(leave_out=["negative_crops_coords_top_left"]), image)
    base.write_reference(ref, OUT, "tools/make_micro_conditioning_fixtures.py", **meta)
    base.list_written(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
