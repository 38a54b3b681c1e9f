#!/usr/bin/env python3
"""EDM-formulation models (Playground v2.5, CosXL) as diffusers draws them, for Lumen's tests.

Playground v2.5 ships an `EDMDPMSolverMultistepScheduler` (no beta schedule: Karras sigmas between
80 and 0.002, the UNet fed c_in · x at the continuous timestep ¼ ln σ) and a VAE config with
per-channel `latents_mean` / `latents_std`, which diffusers' SDXL pipelines use to unscale the
latents. Lumen ran DPM-Solver++ on a beta schedule in its place and ignored the statistics. Run
by hand, never in CI, after tools/make_fixtures.py, tools/make_sdxl_fixtures.py,
tools/make_controlnet_fixtures.py and tools/make_default_fixtures.py (the venv of
tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_edm_fixtures.py

Writes, under Tests/Fixtures/edm/:

  vae/config.json              tiny-sdxl's VAE config with Playground v2.5's scaling_factor (0.5),
                               latents_mean and latents_std
  <case>/scheduler_config.json the case's scheduler config, as save_config writes it
  reference.safetensors        f32 images [1, 64, 64, 3] (numpy, [0, 1]) `image.<case>`, drawn from
                               tiny-sdxl with that VAE config and the case's scheduler (model_index.json
                               naming the class); the requests in __metadata__ (`init`, `mask`,
                               `control` paths under Tests/Fixtures, `strength`, `control_scale`)

Cases:
  playground          EDMDPMSolverMultistepScheduler with Playground v2.5's config, StableDiffusionXLPipeline
  dpm-sde             algorithm_type "sde-dpmsolver++" (fresh noise each step)
  dpm-heun-exponential  solver_type "heun", sigma_schedule "exponential"
  dpm-order3          solver_order 3, 16 steps (third order up to the last step, which is first order)
  dpm-sigma-min       final_sigmas_type "sigma_min" (the class's, equal to the last Karras sigma), 16 steps:
                      the last step is second order with a step of size 0 (the sample unchanged). With
                      solver_order 3 or solver_type "heun" that step divides by 0 (NaN in diffusers;
                      Lumen refuses the config)
  dpm-v               prediction_type "v_prediction"
  euler               EDMEulerScheduler with its defaults
  euler-cosxl         EDMEulerScheduler with CosXL's config (v_prediction, exponential, sigma_data 1,
                      sigma_max 120, sigma_min 0.001)
  euler-continuous    EulerDiscreteScheduler from tiny-sdxl's config with v_prediction and timestep_type
                      "continuous" (the UNet sees ¼ ln σ), use_karras_sigmas
  img2img             playground's scheduler, StableDiffusionXLImg2ImgPipeline, strength 0.6: the init
                      latents are (x − mean) · scaling / std
  inpaint             StableDiffusionXLInpaintPipeline, strength 0.75: diffusers encodes the init image
                      with the scaling factor alone and decodes with the statistics
  controlnet-img2img  StableDiffusionXLControlNetImg2ImgPipeline with tiny-controlnet-xl, scale 0.7
  controlnet-inpaint  StableDiffusionXLControlNetInpaintPipeline, scale 0.7: no statistics either way
"""

import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler, EulerDiscreteScheduler  # noqa: E402

OUT = os.path.join(base.FIXTURES, "edm")
SDXL = os.path.join(base.FIXTURES, "tiny-sdxl")
CONTROLNET = os.path.join(base.FIXTURES, "tiny-controlnet-xl")
REQUEST = dict(prompt="a small green square", negative_prompt="a triangle", num_inference_steps=8, guidance_scale=3.0,
               height=64, width=64, seed=11)
# Playground v2.5's VAE statistics and scaling factor (its vae/config.json).
LATENTS_MEAN = [-1.6574, 1.886, -1.383, 2.5155]
LATENTS_STD = [8.4927, 5.9022, 6.5498, 5.2299]
PLAYGROUND = dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, sigma_schedule="karras", num_train_timesteps=1000,
                  prediction_type="epsilon", rho=7.0, solver_order=2, thresholding=False, dynamic_thresholding_ratio=0.995,
                  sample_max_value=1.0, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
                  euler_at_final=False, final_sigmas_type="zero")
INIT, MASK, CONTROL = "defaults/init.png", "defaults/mask.png", "images/control64.png"
CASES = {
    "playground": (EDMDPMSolverMultistepScheduler, {}, "StableDiffusionXLPipeline", {}),
    "dpm-sde": (EDMDPMSolverMultistepScheduler, dict(algorithm_type="sde-dpmsolver++"), "StableDiffusionXLPipeline", {}),
    "dpm-heun-exponential": (EDMDPMSolverMultistepScheduler, dict(solver_type="heun", sigma_schedule="exponential"),
                             "StableDiffusionXLPipeline", {}),
    "dpm-order3": (EDMDPMSolverMultistepScheduler, dict(solver_order=3), "StableDiffusionXLPipeline", dict(num_inference_steps=16)),
    "dpm-sigma-min": (EDMDPMSolverMultistepScheduler, dict(final_sigmas_type="sigma_min"), "StableDiffusionXLPipeline",
                      dict(num_inference_steps=16)),
    "dpm-v": (EDMDPMSolverMultistepScheduler, dict(prediction_type="v_prediction"), "StableDiffusionXLPipeline", {}),
    "euler": (EDMEulerScheduler, {}, "StableDiffusionXLPipeline", {}),
    "euler-cosxl": (EDMEulerScheduler, dict(prediction_type="v_prediction", sigma_schedule="exponential", sigma_data=1.0,
                                            sigma_max=120.0, sigma_min=0.001), "StableDiffusionXLPipeline", {}),
    "euler-continuous": (EulerDiscreteScheduler, dict(prediction_type="v_prediction", timestep_type="continuous",
                                                      use_karras_sigmas=True), "StableDiffusionXLPipeline", {}),
    "img2img": (EDMDPMSolverMultistepScheduler, {}, "StableDiffusionXLImg2ImgPipeline", dict(init=INIT, strength=0.6)),
    "inpaint": (EDMDPMSolverMultistepScheduler, {}, "StableDiffusionXLInpaintPipeline", dict(init=INIT, mask=MASK, strength=0.75)),
    "controlnet-img2img": (EDMDPMSolverMultistepScheduler, {}, "StableDiffusionXLControlNetImg2ImgPipeline",
                           dict(init=INIT, control=CONTROL, control_scale=0.7, strength=0.6)),
    "controlnet-inpaint": (EDMDPMSolverMultistepScheduler, {}, "StableDiffusionXLControlNetInpaintPipeline",
                           dict(init=INIT, mask=MASK, control=CONTROL, control_scale=0.7, strength=0.75)),
}


def folder_with(scheduler, tmp, name):
    """A copy of tiny-sdxl with the Playground-style VAE config and `scheduler` (model_index.json naming it)."""
    d = os.path.join(tmp, name)
    shutil.copytree(SDXL, d)
    shutil.copy(os.path.join(OUT, "vae", "config.json"), os.path.join(d, "vae", "config.json"))
    shutil.rmtree(os.path.join(d, "scheduler"))
    scheduler.save_config(os.path.join(d, "scheduler"))
    index = json.load(open(os.path.join(d, "model_index.json")))
    index["scheduler"] = ["diffusers", type(scheduler).__name__]
    json.dump(index, open(os.path.join(d, "model_index.json"), "w"), indent=2)
    return d


def image(path, mode="RGB"):
    return Image.open(os.path.join(base.FIXTURES, path)).convert(mode)


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "vae"))
    vae = json.load(open(os.path.join(SDXL, "vae", "config.json")))
    vae.update(scaling_factor=0.5, latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD)
    json.dump(vae, open(os.path.join(OUT, "vae", "config.json"), "w"), indent=2, sort_keys=True)
    controlnet = diffusers.ControlNetModel.from_pretrained(CONTROLNET, torch_dtype=torch.float32, local_files_only=True)
    ref, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cls, options, pipeline, extra) in CASES.items():
            if cls is EulerDiscreteScheduler:
                sdxl_config = json.load(open(os.path.join(SDXL, "scheduler", "scheduler_config.json")))
                scheduler = cls.from_config(sdxl_config, **options)
            else:
                scheduler = cls(**dict(PLAYGROUND if cls is EDMDPMSolverMultistepScheduler else {}, **options))
            os.makedirs(os.path.join(OUT, name))
            scheduler.save_config(os.path.join(OUT, name))
            kwargs = dict(controlnet=controlnet) if "control" in extra else {}
            pipe = getattr(diffusers, pipeline).from_pretrained(folder_with(scheduler, tmp, name), dtype=torch.float32,
                                                                local_files_only=True, **kwargs)
            assert type(pipe.scheduler) is cls
            assert pipe.vae.config.latents_mean == LATENTS_MEAN
            request = dict(REQUEST, **extra)
            args = {k: v for k, v in request.items() if k not in ("seed", "init", "mask", "control", "control_scale")}
            if "init" in request:
                args["image"] = image(request["init"])
            if "mask" in request:
                args["mask_image"] = image(request["mask"], "L")
            if "control" in request:
                key = "control_image" if "init" in request else "image"
                args[key] = image(request["control"])
                args["controlnet_conditioning_scale"] = request["control_scale"]
            out = pipe(**args, generator=torch.Generator().manual_seed(request["seed"]), output_type="np").images
            assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all(), (name, out.shape, np.isfinite(out).mean())
            ref["image." + name] = torch.from_numpy(out).float().contiguous()
            meta[name] = json.dumps(request, sort_keys=True)
    base.write_reference(ref, os.path.join(OUT, "reference.safetensors"), "tools/make_edm_fixtures.py", **meta)
    base.list_written(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
