#!/usr/bin/env python3
"""Zero-terminal-SNR schedules and rescaled guidance, as diffusers draws them, for Lumen's tests.

Models fine-tuned after Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed"
(v-prediction, `rescale_betas_zero_snr`, "trailing" spacing) ship a scheduler config like the one
below and are run with `guidance_rescale` (0.7 in the paper). Run by hand, never in CI, after
tools/make_fixtures.py and tools/make_sd2_fixtures.py (the venv of tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_zero_snr_fixtures.py

Writes, under Tests/Fixtures/zero-snr/:

  ddim-trailing/scheduler_config.json  DDIMScheduler.from_config(tiny-sd2's config, timestep_spacing
                                       "trailing", rescale_betas_zero_snr true), as save_config writes it
  pndm/scheduler_config.json           the same with _class_name PNDMScheduler and skip_prk_steps true
  reference.safetensors                f32 images [1, 64, 64, 3] (numpy, [0, 1]), `image.<case>`, the
                                       cases' requests in __metadata__ (`scheduler` is Lumen's name of
                                       the scheduler chosen on the folder, null for its own;
                                       `guidance_rescale` the pipeline argument):
    ddim, ddim-rescaled         StableDiffusionPipeline on tiny-sd2 with that config as its scheduler,
                                guidance_rescale 0 and 0.7
    euler, euler-a, dpmpp-2m, dpmpp-2m-karras, ddpm
                                the same pipeline with XScheduler.from_config(the folder's config), as
                                `--scheduler X` means (Euler, Euler a and DPM-Solver++ replace the last
                                ᾱ, 0 after the rescale, by 2^-24; DDIM and DDPM keep 0)
    pndm                        the folder with pndm/scheduler_config.json as its scheduler: the DDIM
                                config above renamed PNDMScheduler, with skip_prk_steps true (as SD's
                                own PNDM configs have it; the Runge-Kutta start is checked elsewhere,
                                tools/make_scheduler_option_fixtures.py). PNDM has no
                                rescale_betas_zero_snr, so diffusers ignores the value (and Lumen must too)
    sdxl-rescaled               StableDiffusionXLPipeline on tiny-sdxl, its own scheduler,
                                guidance_rescale 0.7
"""

import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,  # noqa: E402
                       EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline)

OUT = os.path.join(base.FIXTURES, "zero-snr")
SD2 = os.path.join(base.FIXTURES, "tiny-sd2")
SDXL = os.path.join(base.FIXTURES, "tiny-sdxl")
REQUEST = dict(prompt="a small green square", negative_prompt="a triangle", num_inference_steps=6, guidance_scale=6.0,
               height=64, width=64, seed=3)
CHOSEN = {"euler": (EulerDiscreteScheduler, {}), "euler-a": (EulerAncestralDiscreteScheduler, {}),
          "dpmpp-2m": (DPMSolverMultistepScheduler, {}), "dpmpp-2m-karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
          "ddpm": (DDPMScheduler, {})}


def draw(pipe, **extra):
    args = {k: v for k, v in REQUEST.items() if k != "seed"}
    image = pipe(**args, **extra, generator=torch.Generator().manual_seed(REQUEST["seed"]), output_type="np").images
    assert torch.isfinite(torch.from_numpy(image)).all()
    return torch.from_numpy(image).float().contiguous()


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "ddim-trailing"))
    sd2 = StableDiffusionPipeline.from_pretrained(SD2, dtype=torch.float32, local_files_only=True)
    assert sd2.scheduler.config.prediction_type == "v_prediction"
    ddim = DDIMScheduler.from_config(sd2.scheduler.config, timestep_spacing="trailing", rescale_betas_zero_snr=True)
    ddim.save_config(os.path.join(OUT, "ddim-trailing"))
    ref, meta = {}, {}

    def record(name, image, scheduler=None, guidance_rescale=0.0):
        ref["image." + name] = image
        meta[name] = json.dumps(dict(REQUEST, scheduler=scheduler, guidance_rescale=guidance_rescale), sort_keys=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "zero-snr")
        shutil.copytree(SD2, folder)
        ddim.save_config(os.path.join(folder, "scheduler"))
        pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        assert type(pipe.scheduler) is DDIMScheduler and pipe.scheduler.config.rescale_betas_zero_snr
        assert float(pipe.scheduler.alphas_cumprod[-1]) == 0.0
        record("ddim", draw(pipe))
        record("ddim-rescaled", draw(pipe, guidance_rescale=0.7), guidance_rescale=0.7)
        config = pipe.scheduler.config
        for name, (cls, extra) in CHOSEN.items():
            pipe.scheduler = cls.from_config(config, **extra)
            assert pipe.scheduler.config.rescale_betas_zero_snr
            record(name, draw(pipe), scheduler=name)
        pndm = dict(json.load(open(os.path.join(OUT, "ddim-trailing", "scheduler_config.json"))),
                    _class_name="PNDMScheduler", skip_prk_steps=True)
        os.makedirs(os.path.join(OUT, "pndm"))
        for d in (os.path.join(OUT, "pndm"), os.path.join(folder, "scheduler")):
            json.dump(pndm, open(os.path.join(d, "scheduler_config.json"), "w"), indent=2, sort_keys=True)
        index = json.load(open(os.path.join(folder, "model_index.json")))
        index["scheduler"] = ["diffusers", "PNDMScheduler"]
        json.dump(index, open(os.path.join(folder, "model_index.json"), "w"), indent=2)
        pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        assert type(pipe.scheduler) is PNDMScheduler and pipe.scheduler.config.skip_prk_steps
        assert float(pipe.scheduler.alphas_cumprod[-1]) > 0  # the value was not applied
        record("pndm", draw(pipe))

    xl = StableDiffusionXLPipeline.from_pretrained(SDXL, dtype=torch.float32, local_files_only=True)
    record("sdxl-rescaled", draw(xl, guidance_rescale=0.7), guidance_rescale=0.7)
    # The rescale is not a no-op at this size: each image differs from its unrescaled draw.
    assert (ref["image.ddim"] - ref["image.ddim-rescaled"]).abs().max() > 4 / 255
    assert (draw(xl) - ref["image.sdxl-rescaled"]).abs().max() > 4 / 255

    base.save_safetensors({k: v.contiguous().clone() for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"), metadata={
        "format": "pt", "generator": "tools/make_zero_snr_fixtures.py", **meta,
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}, sort_keys=True)})
    for root, _, files in os.walk(OUT):
        for f in sorted(files):
            p = os.path.join(root, f)
            os.chmod(p, 0o644)
            print(f"  {os.path.relpath(p, base.REPO):60s} {os.path.getsize(p):>8,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
