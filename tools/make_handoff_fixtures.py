#!/usr/bin/env python3
"""Generates the committed fixture for Lumen's second-pass seam: a generation stopped part way
(diffusers' `denoising_end`) and finished by an image-to-image pass from its latents
(`denoising_start`), as SDXL's base-to-refiner handoff runs.

Run by hand, never in CI, after tools/make_sdxl_fixtures.py, from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_handoff_fixtures.py

It loads Tests/Fixtures/tiny-sdxl (f32) and writes Tests/Fixtures/handoff-reference.safetensors:
  <case>.latents [1,4,8,8]  StableDiffusionXLPipeline(PROMPT, 64x64, 8 steps, guidance 5, seed 7,
                            denoising_end 0.7, output_type "latent"): the latents after the steps whose
                            timestep is at least round(1000 - 0.7 * 1000)
  <case>.image [1,64,64,3]  StableDiffusionXLImg2ImgPipeline (the same components, no aesthetic score)
                            from those latents with denoising_start 0.7, the same prompt, steps,
                            guidance and seed (no noise is added to the latents)
  <case>.whole [1,64,64,3]  the 8 steps in one run (euler only: the split draws no noise, so the
                            two must agree; asserted here)
for the cases euler (the model's scheduler) and euler-a (EulerAncestralDiscreteScheduler from the
same config: the second pass draws its steps' noise from a generator seeded anew).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers, transformers  # noqa: E402
from diffusers import (EulerAncestralDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,  # noqa: E402
                       StableDiffusionXLPipeline)

FOLDER = os.path.join(base.FIXTURES, "tiny-sdxl")
REFERENCE = os.path.join(base.FIXTURES, "handoff-reference.safetensors")
PIPELINE = dict(prompt=base.PROMPTS[0], height=64, width=64, num_inference_steps=8, guidance_scale=5.0, seed=7)
SPLIT = 0.7


def main():
    base.set_up()
    ref = {}
    for case in ("euler", "euler-a"):
        pipe = StableDiffusionXLPipeline.from_pretrained(FOLDER, dtype=torch.float32, local_files_only=True)
        if case == "euler-a":
            pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
        args = {k: v for k, v in PIPELINE.items() if k != "seed"}

        def generator():
            return torch.Generator().manual_seed(PIPELINE["seed"])
        latents = pipe(**args, denoising_end=SPLIT, output_type="latent", generator=generator()).images
        i2i = StableDiffusionXLImg2ImgPipeline(**pipe.components, requires_aesthetics_score=False)
        i2i_args = {k: v for k, v in args.items() if k not in ("height", "width")}
        image = i2i(**i2i_args, image=latents, denoising_start=SPLIT, generator=generator(), output_type="np").images
        ref[f"{case}.latents"] = latents
        ref[f"{case}.image"] = torch.from_numpy(image)
        if case == "euler":
            whole = torch.from_numpy(pipe(**args, generator=generator(), output_type="np").images)
            ref[f"{case}.whole"] = whole
            assert (whole - ref[f"{case}.image"]).abs().max() < 1e-4, "a split Euler run must equal the whole run"
        assert ref[f"{case}.image"].std() > 0.02
    assert (ref["euler.image"] - ref["euler-a.image"]).abs().max() > 0.01
    ref = {k: v.to(torch.float32).clone().contiguous() for k, v in ref.items()}
    for k, v in ref.items():
        assert torch.isfinite(v).all(), k
    base.save_safetensors(ref, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_handoff_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__}, sort_keys=True),
        "pipeline": json.dumps(PIPELINE, sort_keys=True),
        "split": json.dumps(SPLIT)})
    base.print_fixtures([REFERENCE], ref)


if __name__ == "__main__":
    main()
