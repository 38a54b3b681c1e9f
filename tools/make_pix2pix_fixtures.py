#!/usr/bin/env python3
"""An InstructPix2Pix model and diffusers' edits with it, for Lumen's tests.

InstructPix2Pix (timbrooks/instruct-pix2pix) conditions an 8-channel UNet on the latents and the
image to edit (the encoder's mean, unscaled) and guides in three groups: the prompt with the image,
the unconditional text with the image, and with no image. Lumen refused the 8-channel UNet. Run by
hand, never in CI, after tools/make_fixtures.py and tools/make_default_fixtures.py (the venv of
tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_pix2pix_fixtures.py

Writes Tests/Fixtures/tiny-sd-pix2pix/: tiny-sd with an 8-channel UNet (conv_in's first four input
channels tiny-sd's, the other four random; every other weight tiny-sd's; stored in f16, each value
f16-exact so that the f32 pipeline reads the same numbers), the other parts symlinks to tiny-sd's,
and model_index.json naming StableDiffusionInstructPix2PixPipeline; and
Tests/Fixtures/pix2pix-reference.safetensors: f32 images (numpy, [0, 1]) `image.<case>` of
StableDiffusionInstructPix2PixPipeline with defaults/init.png, the requests in __metadata__:

  default           20 steps, guidance 7.5, image guidance 1.5 (the pipeline's defaults but the steps)
  image-guidance-1  guidance 5, image guidance 1 (still the three-group guidance: >= 1)
  unguided          image guidance 0.5 (diffusers then runs one group: the prompt with the image)
  two               the default case with num_images_per_prompt 2 ([2, 64, 64, 3])

and, the same way, Tests/Fixtures/tiny-sdxl-pix2pix/ (tiny-sdxl with an 8-channel UNet) with
StableDiffusionXLInstructPix2PixPipeline's edits (`model` in the request):

  sdxl              20 steps, guidance 5, image guidance 1.5, no negative prompt (zeroed, force_zeros_for_empty_prompt)
  sdxl-rescale      with a negative prompt and guidance_rescale 0.7 (toward the prompt's prediction)
  sdxl-cosxl        the pipeline built with is_cosxl_edit=True (the image latents times the scaling factor;
                    `is_cosxl_edit` in the request: the test's folder says so in model_index.json)
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

MODEL = os.path.join(base.FIXTURES, "tiny-sd-pix2pix")
XL_MODEL = os.path.join(base.FIXTURES, "tiny-sdxl-pix2pix")
OUT = os.path.join(base.FIXTURES, "pix2pix-reference.safetensors")
REQUEST = dict(prompt="make it a small green square", negative_prompt="a triangle", num_inference_steps=20, guidance_scale=7.5,
               image_guidance_scale=1.5, seed=13, init="defaults/init.png")
CASES = {"default": {}, "image-guidance-1": dict(guidance_scale=5.0, image_guidance_scale=1.0), "unguided": dict(image_guidance_scale=0.5),
         "two": dict(num_images_per_prompt=2)}


def pix2pix_folder(model, source_name, parts, pipeline_class, seed):
    """`model`: the source folder's parts linked, its UNet widened to 8 input channels."""
    if os.path.isdir(model):
        shutil.rmtree(model)
    os.makedirs(model)
    for part in parts:
        os.symlink(os.path.join("..", source_name, part), os.path.join(model, part))
    source_folder = os.path.join(base.FIXTURES, source_name)
    source = diffusers.UNet2DConditionModel.from_pretrained(os.path.join(source_folder, "unet"), local_files_only=True)
    config = dict(source.config)
    config["in_channels"] = 8
    unet = diffusers.UNet2DConditionModel.from_config(config)
    state = source.state_dict()
    g = torch.Generator().manual_seed(seed)
    conv = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([conv, torch.randn(conv.shape, generator=g) * conv.std()], dim=1)
    unet.load_state_dict({k: v.to(torch.float16).float() for k, v in state.items()})
    unet.to(torch.float16).save_pretrained(os.path.join(model, "unet"))
    index = json.load(open(os.path.join(source_folder, "model_index.json")))
    index["_class_name"] = pipeline_class
    json.dump(index, open(os.path.join(model, "model_index.json"), "w"), indent=2, sort_keys=True)


XL_REQUEST = dict(prompt="make it a small green square", num_inference_steps=20, guidance_scale=5.0, image_guidance_scale=1.5, seed=19,
                  init="defaults/init.png", model="tiny-sdxl-pix2pix")
XL_CASES = {"sdxl": {}, "sdxl-rescale": dict(negative_prompt="a triangle", guidance_rescale=0.7), "sdxl-cosxl": dict(is_cosxl_edit=True)}


def main():
    base.set_up()
    pix2pix_folder(MODEL, "tiny-sd", ("text_encoder", "tokenizer", "vae", "scheduler"), "StableDiffusionInstructPix2PixPipeline", 4100)
    pix2pix_folder(XL_MODEL, "tiny-sdxl", ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae", "scheduler"),
                   "StableDiffusionXLInstructPix2PixPipeline", 4200)

    pipe = diffusers.StableDiffusionInstructPix2PixPipeline.from_pretrained(MODEL, dtype=torch.float32, local_files_only=True,
                                                                         safety_checker=None)
    assert pipe.unet.config.in_channels == 8 and pipe.unet.dtype == torch.float32
    image = Image.open(os.path.join(base.FIXTURES, REQUEST["init"])).convert("RGB")
    ref, meta = {}, {}
    for name, extra in CASES.items():
        request = dict(REQUEST, **extra)
        args = {k: v for k, v in request.items() if k not in ("seed", "init")}
        out = pipe(**args, image=image, generator=torch.Generator().manual_seed(request["seed"]), output_type="np").images
        assert np.isfinite(out).all() and out.shape[1:] == (64, 64, 3)
        ref["image." + name] = torch.from_numpy(out).float().contiguous()
        meta[name] = json.dumps(request, sort_keys=True)
    assert (ref["image.default"] - ref["image.unguided"]).abs().max() > 4 / 255
    for name, extra in XL_CASES.items():
        request = dict(XL_REQUEST, **extra)
        pipe = diffusers.StableDiffusionXLInstructPix2PixPipeline.from_pretrained(XL_MODEL, dtype=torch.float32, local_files_only=True,
                                                                                is_cosxl_edit=request.get("is_cosxl_edit", False))
        args = {k: v for k, v in request.items() if k not in ("seed", "init", "model", "is_cosxl_edit")}
        out = pipe(**args, image=image, generator=torch.Generator().manual_seed(request["seed"]), output_type="np").images
        assert np.isfinite(out).all() and out.shape == (1, 64, 64, 3)
        ref["image." + name] = torch.from_numpy(out).float().contiguous()
        meta[name] = json.dumps(request, sort_keys=True)
    assert (ref["image.sdxl"] - ref["image.sdxl-cosxl"]).abs().max() > 4 / 255
    base.write_reference(ref, OUT, "tools/make_pix2pix_fixtures.py", **meta)
    base.list_written(OUT, MODEL, XL_MODEL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
