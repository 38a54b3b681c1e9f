"""Fixtures for TAESD as the init image's encoder (issue #20, `--vae-encoder taesd`). Run by hand with
the pinned venv (never in CI), after make_fixtures.py, make_taesd_fixtures.py and make_inpaint_fixtures.py:
    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_taesd_encode_fixtures.py

The oracle is diffusers' pipelines given `vae=AutoencoderTiny` (the tiny AutoencoderTiny of
Tests/Fixtures/taesd/tiny) on the tiny SD model (Tests/Fixtures/tiny-sd, f32): the init image is
encoded by `AutoencoderTiny.encode(x).latents` (retrieve_latents takes `.latents`: nothing is drawn
from the generator; AutoencoderTiny's scaling factor is 1), the final latents decoded by it. With
Euler ancestral, whose steps draw noise, a single stray draw would shift every step's noise.

Writes Tests/Fixtures/taesd-encode-reference.safetensors, per case:
  <case>.latents [1, 4, 8, 8]      output_type "latent"
  <case>.image [1, 64, 64, 3]      the pipeline's image (TAESD decode), uint8 values as floats
  <case>.vae-image [1, 64, 64, 3]  the same latents decoded by tiny-sd's VAE (what Lumen's
                                   --vae-encoder taesd with --vae-decoder vae gives)
with the request as JSON in the metadata under the case's name. Cases: img2img (Euler ancestral,
strength 0.6) from images/init64.png; inpaint (StableDiffusionInpaintPipeline with the 4-channel
UNet, Euler ancestral, strength 0.75, images/mask64.png).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers, transformers  # noqa: E402
from diffusers import (AutoencoderTiny, EulerAncestralDiscreteScheduler, StableDiffusionImg2ImgPipeline,  # noqa: E402
                       StableDiffusionInpaintPipeline)
from PIL import Image  # noqa: E402

MODEL = os.path.join(base.FIXTURES, "tiny-sd")
TAESD = os.path.join(base.FIXTURES, "taesd", "tiny")
OUT = os.path.join(base.FIXTURES, "taesd-encode-reference.safetensors")
CASES = [
    dict(name="img2img", prompt="a red circle on a blue background", negative_prompt="blurry", num_inference_steps=6,
         guidance_scale=7.5, strength=0.6, seed=17),
    dict(name="inpaint", prompt="a green square", negative_prompt=None, num_inference_steps=6, guidance_scale=6.0,
         strength=0.75, seed=18, mask="images/mask64.png"),
]


def to_uint8(images):
    """output_type "np" (x / 2 + 0.5 clamped, [N, H, W, 3]) × 255, rounded."""
    return torch.from_numpy(images * 255).round()


def main():
    base.set_up()
    taesd = AutoencoderTiny.from_pretrained(TAESD, local_files_only=True).eval()
    assert taesd.config.scaling_factor == 1.0
    init = Image.open(os.path.join(base.FIXTURES, "images", "init64.png")).convert("RGB")
    ref, meta = {}, {}
    for case in CASES:
        cls = StableDiffusionInpaintPipeline if "mask" in case else StableDiffusionImg2ImgPipeline
        pipe = cls.from_pretrained(MODEL, dtype=torch.float32, safety_checker=None, requires_safety_checker=False,
                                   local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
        vae = pipe.vae
        fast = cls(**{**pipe.components, "vae": taesd})
        fast.set_progress_bar_config(disable=True)
        kwargs = dict(prompt=case["prompt"], negative_prompt=case["negative_prompt"], image=init,
                      num_inference_steps=case["num_inference_steps"], guidance_scale=case["guidance_scale"],
                      strength=case["strength"])
        if "mask" in case:
            kwargs.update(mask_image=Image.open(os.path.join(base.FIXTURES, case["mask"])), height=64, width=64)
        name = case["name"]
        with torch.no_grad():
            latents = fast(**kwargs, generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="latent").images
            images = fast(**kwargs, generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="np").images
            decoded = vae.decode(latents / vae.config.scaling_factor).sample
            vae_images = fast.image_processor.postprocess(decoded, output_type="np")
        ref[f"{name}.latents"] = latents
        ref[f"{name}.image"] = to_uint8(images)
        ref[f"{name}.vae-image"] = to_uint8(vae_images)
        # The same request encoded by the VAE differs: the fixture tells the encoders apart.
        with torch.no_grad():
            plain = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="latent").images
        assert (plain - latents).abs().max() > 0.1, f"{name}: the VAE's and TAESD's encodings must differ"
        meta[name] = json.dumps({**{k: v for k, v in case.items() if k != "name"}, "width": 64, "height": 64,
                                 "init": "images/init64.png"}, sort_keys=True)
        print(name, tuple(latents.shape), float(latents.abs().max()), float((plain - latents).abs().max()))
    ref = {k: v.to(torch.float32).contiguous() for k, v in ref.items()}
    for k, v in ref.items():
        assert torch.isfinite(v).all(), k
    base.save_safetensors(ref, OUT, metadata={
        **meta, "format": "pt", "generator": "tools/make_taesd_encode_fixtures.py", "scheduler": "euler-a",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__}, sort_keys=True)})
    base.print_fixtures([OUT], ref)


if __name__ == "__main__":
    main()
