#!/usr/bin/env python3
"""Scheduler options Lumen once ignored or refused, as diffusers' pipeline draws them, for Lumen's
scheduler-option tests.

Run by hand, never in CI, after tools/make_fixtures.py (the venv of tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_scheduler_option_fixtures.py

Writes, under Tests/Fixtures/scheduler-options/:

  <case>/scheduler_config.json   XScheduler.from_config(tiny-sd's config, **options), as save_config
                                 writes it (the options in the table below)
  reference.safetensors          f32 images [1, 48, 48, 3] (numpy, [0, 1]) of StableDiffusionPipeline
                                 loaded from tiny-sd with each config as its scheduler (model_index.json
                                 naming the class): `image.<case>`; the requests in __metadata__
                                 (`scheduler`: Lumen's name of a scheduler chosen on the folder instead,
                                 as `--scheduler` does, null for the folder's own).

Cases (all were silently drawn with other sigmas, or refused, before):
  pndm-prk                 PNDMScheduler, skip_prk_steps false (the class default): Runge-Kutta start
  euler-pndm-prk           an Euler config without skip_prk_steps, `--scheduler pndm` chosen on it:
                           PNDMScheduler.from_config takes the class default, false, too
  dpmpp-sde                DPMSolverMultistepScheduler, algorithm_type "sde-dpmsolver++" (DPM++ 2M SDE)
  dpmpp-sde-karras-heun    the same with use_karras_sigmas and solver_type "heun"
  dpmpp-lu                 use_lu_lambdas
  dpmpp-exponential        use_exponential_sigmas
  dpmpp-sigma-min          final_sigmas_type "sigma_min" at 16 steps (the last step second order)
  dpmpp-lambda-clipped     lambda_min_clipped -2.0 (the noisiest timesteps left out)
  euler-exponential        EulerDiscreteScheduler, use_exponential_sigmas
  unipc                    UniPCMultistepScheduler with its defaults (bh2, order 2, corrector on)
  unipc-order3-karras      solver_order 3, use_karras_sigmas, final_sigmas_type "sigma_min", 12 steps
  unipc-bh1-sigma-min      solver_type "bh1", final_sigmas_type "sigma_min", disable_corrector [1]
  pndm-unipc               tiny-sd's own PNDM config, `--scheduler unipc` chosen on it
  pndm-dpmpp-2m-sde        the same, `--scheduler dpmpp-2m-sde` (DPMSolverMultistepScheduler.from_config
                           with algorithm_type "sde-dpmsolver++")
  pndm-dpmpp-2m-sde-karras the same with use_karras_sigmas
  deis                     DEISMultistepScheduler with its defaults (order 2, ending at the smallest sigma)
  deis-order3-karras       solver_order 3, use_karras_sigmas, 16 steps (order 3 through the end)
  pndm-deis                tiny-sd's own PNDM config, `--scheduler deis`
  heun                     HeunDiscreteScheduler with its defaults (two evaluations a step)
  heun-karras-leading      use_karras_sigmas, timestep_spacing "leading"
  lms                      LMSDiscreteScheduler with its defaults (order 4)
  pndm-heun, pndm-lms      tiny-sd's own PNDM config, `--scheduler heun` / `lms`
  heun-img2img, lms-img2img  the same chosen on StableDiffusionImg2ImgPipeline with init.png (48×48,
                           written here from a fixed pattern), strength 0.6 (`init` and `strength`
                           in the request): the image-to-image start of a second-order scheduler
                           (index t_start · 2) and LMS's order taken from the step index
  kdpm2, kdpm2-a-karras    KDPM2DiscreteScheduler with its defaults; KDPM2AncestralDiscreteScheduler
                           with use_karras_sigmas (noise drawn after each step's second evaluation)
  pndm-kdpm2-a, kdpm2-a-img2img  `--scheduler kdpm2-a` on tiny-sd, text-to-image and image-to-image
  singlestep               DPMSolverSinglestepScheduler with its defaults (order 2 in groups of two)
  singlestep-sde-karras    algorithm_type "sde-dpmsolver++", use_karras_sigmas, 8 steps
  singlestep-img2img       `--scheduler dpmpp-singlestep` on tiny-sd, image-to-image (a start mid-group)
"""

import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
from diffusers import (DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline,  # noqa: E402
                       UniPCMultistepScheduler, DEISMultistepScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler,
                       KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler, DPMSolverSinglestepScheduler,
                       StableDiffusionImg2ImgPipeline)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

OUT = os.path.join(base.FIXTURES, "scheduler-options")
REQUEST = dict(prompt="a small green square", negative_prompt="a triangle", num_inference_steps=7, guidance_scale=6.0,
               height=48, width=48, seed=11)
DPM = DPMSolverMultistepScheduler
CASES = {
    "pndm-prk": (PNDMScheduler, dict(skip_prk_steps=False), None, {}),
    "euler-pndm-prk": (EulerDiscreteScheduler, dict(), "pndm", {}),
    "dpmpp-sde": (DPM, dict(algorithm_type="sde-dpmsolver++"), None, {}),
    "dpmpp-sde-karras-heun": (DPM, dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True, solver_type="heun"), None, {}),
    "dpmpp-lu": (DPM, dict(use_lu_lambdas=True), None, {}),
    "dpmpp-exponential": (DPM, dict(use_exponential_sigmas=True), None, {}),
    "dpmpp-sigma-min": (DPM, dict(final_sigmas_type="sigma_min"), None, dict(num_inference_steps=16)),
    "dpmpp-lambda-clipped": (DPM, dict(lambda_min_clipped=-2.0), None, {}),
    "euler-exponential": (EulerDiscreteScheduler, dict(use_exponential_sigmas=True), None, {}),
    "unipc": (UniPCMultistepScheduler, dict(), None, {}),
    "unipc-order3-karras": (UniPCMultistepScheduler, dict(solver_order=3, use_karras_sigmas=True, final_sigmas_type="sigma_min"), None,
                            dict(num_inference_steps=12)),
    "unipc-bh1-sigma-min": (UniPCMultistepScheduler, dict(solver_type="bh1", final_sigmas_type="sigma_min", disable_corrector=[1]), None, {}),
    "pndm-unipc": (PNDMScheduler, dict(), "unipc", {}),
    "pndm-dpmpp-2m-sde": (PNDMScheduler, dict(), "dpmpp-2m-sde", {}),
    "pndm-dpmpp-2m-sde-karras": (PNDMScheduler, dict(), "dpmpp-2m-sde-karras", {}),
    "deis": (DEISMultistepScheduler, dict(), None, {}),
    "deis-order3-karras": (DEISMultistepScheduler, dict(solver_order=3, use_karras_sigmas=True), None, dict(num_inference_steps=16)),
    "pndm-deis": (PNDMScheduler, dict(), "deis", {}),
    "heun": (HeunDiscreteScheduler, dict(), None, {}),
    "heun-karras-leading": (HeunDiscreteScheduler, dict(use_karras_sigmas=True, timestep_spacing="leading"), None, {}),
    "lms": (LMSDiscreteScheduler, dict(), None, {}),
    "pndm-heun": (PNDMScheduler, dict(), "heun", {}),
    "pndm-lms": (PNDMScheduler, dict(), "lms", {}),
    "heun-img2img": (PNDMScheduler, dict(), "heun", dict(init="scheduler-options/init.png", strength=0.6)),
    "lms-img2img": (PNDMScheduler, dict(), "lms", dict(init="scheduler-options/init.png", strength=0.6)),
    "kdpm2": (KDPM2DiscreteScheduler, dict(), None, {}),
    "kdpm2-a-karras": (KDPM2AncestralDiscreteScheduler, dict(use_karras_sigmas=True), None, {}),
    "pndm-kdpm2-a": (PNDMScheduler, dict(), "kdpm2-a", {}),
    "kdpm2-a-img2img": (PNDMScheduler, dict(), "kdpm2-a", dict(init="scheduler-options/init.png", strength=0.6)),
    "singlestep": (DPMSolverSinglestepScheduler, dict(), None, {}),
    "singlestep-sde-karras": (DPMSolverSinglestepScheduler, dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True), None,
                              dict(num_inference_steps=8)),
    "singlestep-img2img": (PNDMScheduler, dict(), "dpmpp-singlestep", dict(init="scheduler-options/init.png", strength=0.6)),
}
# What `--scheduler NAME` means: NAME's class from_config(the folder's config), with the kind's own settings.
CHOSEN = {"pndm": (PNDMScheduler, {}), "unipc": (UniPCMultistepScheduler, {}), "deis": (DEISMultistepScheduler, {}),
          "heun": (HeunDiscreteScheduler, {}), "lms": (LMSDiscreteScheduler, {}), "kdpm2-a": (KDPM2AncestralDiscreteScheduler, {}),
          "dpmpp-singlestep": (DPMSolverSinglestepScheduler, {}),
          "dpmpp-2m-sde": (DPM, dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=False)),
          "dpmpp-2m-sde-karras": (DPM, dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True))}


def folder_with(scheduler, tmp, name):
    """A copy of tiny-sd whose scheduler (and model_index.json entry) is `scheduler`."""
    d = os.path.join(tmp, name)
    shutil.copytree(base.FOLDER, d)
    shutil.rmtree(os.path.join(d, "scheduler"))
    scheduler.save_config(os.path.join(d, "scheduler"))
    index = json.load(open(os.path.join(d, "model_index.json")))
    index["scheduler"] = ["diffusers", type(scheduler).__name__]
    json.dump(index, open(os.path.join(d, "model_index.json"), "w"), indent=2)
    return d


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    config = StableDiffusionPipeline.from_pretrained(base.FOLDER, local_files_only=True).scheduler.config
    os.makedirs(OUT)
    yy, xx = np.mgrid[0:48, 0:48]
    pattern = np.stack([(xx * 5) % 256, (yy * 5) % 256, ((xx + 2 * yy) * 3) % 256], -1).astype(np.uint8)
    Image.fromarray(pattern).save(os.path.join(OUT, "init.png"))
    ref, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cls, options, chosen, extra) in CASES.items():
            scheduler = cls.from_config(config, **options)
            os.makedirs(os.path.join(OUT, name))
            scheduler.save_config(os.path.join(OUT, name))
            if "skip_prk_steps" in json.load(open(os.path.join(OUT, name, "scheduler_config.json"))) and chosen == "pndm":
                # The chosen case needs a config without the key (SD 1.5's PNDM config has it, as true).
                text = json.load(open(os.path.join(OUT, name, "scheduler_config.json")))
                del text["skip_prk_steps"]
                json.dump(text, open(os.path.join(OUT, name, "scheduler_config.json"), "w"), indent=2, sort_keys=True)
                scheduler = cls.from_config(text)
            pipe = StableDiffusionPipeline.from_pretrained(folder_with(scheduler, tmp, name), dtype=torch.float32, local_files_only=True)
            assert type(pipe.scheduler) is cls
            if chosen is not None:
                chosen_cls, chosen_options = CHOSEN[chosen]
                pipe.scheduler = chosen_cls.from_config(pipe.scheduler.config, **chosen_options)
            if chosen == "pndm":
                assert not pipe.scheduler.config.skip_prk_steps
            request = dict(REQUEST, **extra)
            args = {k: v for k, v in request.items() if k not in ("seed", "init")}
            if "init" in request:
                pipe = StableDiffusionImg2ImgPipeline(**pipe.components)
                args.update(image=Image.open(os.path.join(base.FIXTURES, request["init"])).convert("RGB"))
                del args["height"], args["width"]
            image = pipe(**args, generator=torch.Generator().manual_seed(request["seed"]), output_type="np").images
            assert torch.isfinite(torch.from_numpy(image)).all()
            ref["image." + name] = torch.from_numpy(image).float().contiguous()
            meta[name] = json.dumps(dict(request, scheduler=chosen), sort_keys=True)
    base.save_safetensors({k: v.contiguous().clone() for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"), metadata={
        "format": "pt", "generator": "tools/make_scheduler_option_fixtures.py", **meta,
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}, sort_keys=True)})
    for root, _, files in os.walk(OUT):
        for f in sorted(files):
            p = os.path.join(root, f)
            os.chmod(p, 0o644)
            print(f"  {os.path.relpath(p, base.REPO):60s} {os.path.getsize(p):>8,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
