#!/usr/bin/env python3
"""Generates the committed fixtures for masked image-to-image with an ordinary (4-channel) UNet,
as diffusers' StableDiffusionInpaintPipeline runs it: after every step the known latents, noised
to the next step's level, replace the latents outside the mask (white = repaint).

Run by hand, never in CI, from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_inpaint_fixtures.py

It writes Tests/Fixtures/images/mask64.png (64x64 grey: a white rectangle, a band of 200 that
binarizes to white, a band of 100 that binarizes to black, on black) and
Tests/Fixtures/inpaint-reference.safetensors, per case, from Tests/Fixtures/tiny-sd (f32),
images/init64.png and the mask:
  <case>.latents [N,4,8,8]   output_type "latent"
  <case>.image [N,64,64,3]   uint8, output_type "np" × 255 rounded
with the request as JSON in the metadata under the case's name. Cases: the model's PNDM at
strength 0.75; Euler ancestral at strength 1.0 (pure noise start, and the steps' noise drawn
after the generator also sampled the masked image's latents); DDIM at 0.6 with two images.

It also writes Tests/Fixtures/tiny-sd-inpaint/: an inpainting model whose UNet takes 9 channels
(latents, mask, masked image's latents), tiny-sd's UNet config with in_channels 9 and random weights
(f16), its other parts symlinks to tiny-sd's; and the cases inpaint9-* of a 9-channel
StableDiffusionInpaintPipeline: PNDM at 0.8, and Euler ancestral at 1.0 (no init-image latents are
drawn then; the masked image's are). And Tests/Fixtures/tiny-sdxl-inpaint/ (tiny-sdxl with a
9-channel UNet) with the cases sdxl-masked (tiny-sdxl, StableDiffusionXLInpaintPipeline with its
4-channel UNet, strength 0.7) and sdxl-inpaint9 (strength 1), no aesthetic score.

And Tests/Fixtures/tiny-sd-inpaint.safetensors: tiny-sd-inpaint as one f16 single file with the
original names (the converters of tools/make_fixtures.py), loaded back by diffusers'
StableDiffusionInpaintPipeline.from_single_file(config=tiny-sd-inpaint) into equal state dicts, with
the case single-inpaint9 drawn from that pipeline.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from diffusers import (DDIMScheduler, EulerAncestralDiscreteScheduler, PNDMScheduler, StableDiffusionInpaintPipeline,
                       StableDiffusionXLInpaintPipeline)
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
MODEL = os.path.join(ROOT, "tiny-sd")
MASK = os.path.join(ROOT, "images", "mask64.png")
INPAINT_MODEL = os.path.join(ROOT, "tiny-sd-inpaint")
SEED_INPAINT_UNET = 5151
SDXL_MODEL = os.path.join(ROOT, "tiny-sdxl")
SINGLE_INPAINT = os.path.join(ROOT, "tiny-sd-inpaint.safetensors")
SDXL_INPAINT_MODEL = os.path.join(ROOT, "tiny-sdxl-inpaint")
OUT = os.path.join(ROOT, "inpaint-reference.safetensors")

SCHEDULERS = {
    "pndm": PNDMScheduler.from_config,
    "euler-a": EulerAncestralDiscreteScheduler.from_config,
    "ddim": DDIMScheduler.from_config,
}
CASES = [
    # name, scheduler, prompt, negative, steps, guidance, strength, seed, count
    ("pndm", "pndm", "a photo of an astronaut riding a horse on mars", "low quality", 8, 7.5, 0.75, 31, 1),
    ("euler-a-full", "euler-a", "a red circle", "blurry", 6, 6.0, 1.0, 32, 1),
    ("ddim-two", "ddim", "a landscape", None, 5, 7.5, 0.6, 33, 2),
]
CASES_9 = [
    ("inpaint9-pndm", "pndm", "a photo of an astronaut riding a horse on mars", "low quality", 8, 7.5, 0.8, 34, 1),
    ("inpaint9-euler-a-full", "euler-a", "a red circle", None, 6, 6.0, 1.0, 35, 2),
]


CASES_XL = [
    # name, folder, prompt, negative, steps, guidance, strength, seed (the model's Euler scheduler, one image)
    ("sdxl-masked", SDXL_MODEL, "a photo of an astronaut riding a horse on mars", None, 6, 5.0, 0.7, 36),
    ("sdxl-inpaint9", SDXL_INPAINT_MODEL, "a red circle", "blurry", 5, 5.0, 1.0, 37),
]


def make_inpaint_model(source=MODEL, dest=None, seed=SEED_INPAINT_UNET, parts=("text_encoder", "tokenizer", "vae", "scheduler"),
                       class_name="StableDiffusionInpaintPipeline"):
    """`source` with a 9-channel UNet of random weights, saved as a folder in f16 at `dest`, its
    other parts symlinks to the source's."""
    from diffusers import UNet2DConditionModel
    dest = dest or INPAINT_MODEL
    unet_config = dict(UNet2DConditionModel.load_config(os.path.join(source, "unet")))
    unet_config = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    unet_config["in_channels"] = 9
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config)
    base.randomise(unet, seed)
    unet.eval()
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    unet.to(torch.float16).save_pretrained(os.path.join(dest, "unet"), safe_serialization=True)
    for sub in parts:
        os.symlink(os.path.join("..", os.path.basename(source), sub), os.path.join(dest, sub))
    index = json.load(open(os.path.join(source, "model_index.json")))
    index["_class_name"] = class_name
    with open(os.path.join(dest, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    back = load_file(os.path.join(dest, "unet", "diffusion_pytorch_model.safetensors"))
    assert back["conv_in.weight"].shape[1] == 9


def make_mask():
    m = np.zeros((64, 64), dtype=np.uint8)
    m[8:40, 16:48] = 255
    m[44:52, 8:56] = 200  # >= 0.5 after /255: repainted
    m[54:60, 8:56] = 100  # < 0.5: kept
    Image.fromarray(m, "L").save(MASK)


def main():
    torch.set_num_threads(1)
    make_mask()
    pipe = StableDiffusionInpaintPipeline.from_pretrained(MODEL, dtype=torch.float32, safety_checker=None,
                                                          requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.in_channels == 4
    model_config = pipe.scheduler.config
    init = Image.open(os.path.join(ROOT, "images", "init64.png")).convert("RGB")
    mask = Image.open(MASK)
    tensors, meta = {}, {"diffusers": __import__("diffusers").__version__, "torch": torch.__version__,
                         "generator": "tools/make_inpaint_fixtures.py"}
    for name, sched, prompt, negative, steps, guidance, strength, seed, count in CASES:
        pipe.scheduler = SCHEDULERS[sched](model_config)
        kwargs = dict(prompt=prompt, negative_prompt=negative, image=init, mask_image=mask, height=64, width=64,
                      num_inference_steps=steps, guidance_scale=guidance, strength=strength, num_images_per_prompt=count)
        latents = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        images = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        tensors[f"{name}.latents"] = latents.contiguous()
        tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
        meta[name] = json.dumps(dict(scheduler=sched, prompt=prompt, negative_prompt=negative, steps=steps,
                                     guidance=guidance, strength=strength, seed=seed, count=count,
                                     init="images/init64.png", mask="images/mask64.png"))
        # Outside the mask the image keeps the init image's latents: check the blend happened.
        print(name, tuple(latents.shape), float(latents.abs().max()))
    make_inpaint_model()
    pipe9 = StableDiffusionInpaintPipeline.from_pretrained(INPAINT_MODEL, dtype=torch.float32, safety_checker=None,
                                                           requires_safety_checker=False, local_files_only=True)
    pipe9.set_progress_bar_config(disable=True)
    assert pipe9.unet.config.in_channels == 9
    for name, sched, prompt, negative, steps, guidance, strength, seed, count in CASES_9:
        pipe9.scheduler = SCHEDULERS[sched](model_config)
        kwargs = dict(prompt=prompt, negative_prompt=negative, image=init, mask_image=mask, height=64, width=64,
                      num_inference_steps=steps, guidance_scale=guidance, strength=strength, num_images_per_prompt=count)
        latents = pipe9(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        images = pipe9(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        tensors[f"{name}.latents"] = latents.contiguous()
        tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
        meta[name] = json.dumps(dict(scheduler=sched, prompt=prompt, negative_prompt=negative, steps=steps,
                                     guidance=guidance, strength=strength, seed=seed, count=count,
                                     init="images/init64.png", mask="images/mask64.png", model="tiny-sd-inpaint"))
        print(name, tuple(latents.shape), float(latents.abs().max()))
    # The 9-channel model as a single file with the original names, read back by diffusers.
    single = {}
    unet_config = dict(pipe9.unet.config)
    vae_config = dict(pipe9.vae.config)
    single.update(base.unet_to_ldm(base.float_state(pipe9.unet), unet_config))
    single.update(base.vae_to_ldm(base.float_state(pipe9.vae), vae_config))
    single.update(base.text_to_ldm(base.float_state(pipe9.text_encoder)))
    single = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sorted(single.items())}
    base.save_safetensors(single, SINGLE_INPAINT, metadata={"format": "pt", "lumen_fixture": "tiny-sd-inpaint; tools/make_inpaint_fixtures.py"})
    loaded = StableDiffusionInpaintPipeline.from_single_file(SINGLE_INPAINT, config=INPAINT_MODEL, local_files_only=True,
                                                             torch_dtype=torch.float32, safety_checker=None,
                                                             requires_safety_checker=False)
    for part in ("unet", "vae", "text_encoder"):
        base.assert_same_state(f"from_single_file {part}", getattr(loaded, part).state_dict(), base.float_state(getattr(pipe9, part)))
    loaded.set_progress_bar_config(disable=True)
    loaded.scheduler = SCHEDULERS["pndm"](model_config)
    name, steps, guidance, strength, seed = "single-inpaint9", 6, 7.5, 0.9, 38
    kwargs = dict(prompt="a red circle", negative_prompt="blurry", image=init, mask_image=mask, height=64, width=64,
                  num_inference_steps=steps, guidance_scale=guidance, strength=strength)
    tensors[f"{name}.latents"] = loaded(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images.contiguous()
    images = loaded(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
    tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
    meta[name] = json.dumps(dict(scheduler="pndm", prompt="a red circle", negative_prompt="blurry", steps=steps, guidance=guidance,
                                 strength=strength, seed=seed, count=1, init="images/init64.png", mask="images/mask64.png",
                                 model="tiny-sd-inpaint.safetensors", config="tiny-sd-inpaint"))

    # SDXL: masked img2img with tiny-sdxl's 4-channel UNet, and a 9-channel SDXL inpainting UNet.
    make_inpaint_model(SDXL_MODEL, SDXL_INPAINT_MODEL, SEED_INPAINT_UNET + 1,
                       ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae", "scheduler"),
                       "StableDiffusionXLInpaintPipeline")
    for name, folder, prompt, negative, steps, guidance, strength, seed in CASES_XL:
        pipe_xl = StableDiffusionXLInpaintPipeline.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        pipe_xl.set_progress_bar_config(disable=True)
        kwargs = dict(prompt=prompt, negative_prompt=negative, image=init, mask_image=mask, height=64, width=64,
                      num_inference_steps=steps, guidance_scale=guidance, strength=strength)
        latents = pipe_xl(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        images = pipe_xl(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        tensors[f"{name}.latents"] = latents.contiguous()
        tensors[f"{name}.image"] = torch.from_numpy((images * 255).round().astype(np.uint8)).contiguous()
        meta[name] = json.dumps(dict(scheduler="euler", prompt=prompt, negative_prompt=negative, steps=steps,
                                     guidance=guidance, strength=strength, seed=seed, count=1,
                                     init="images/init64.png", mask="images/mask64.png", model=os.path.basename(folder)))
        print(name, tuple(latents.shape), float(latents.abs().max()))
    save_file(tensors, OUT, metadata=meta)
    print(OUT, os.path.getsize(OUT))


if __name__ == "__main__":
    main()
