#!/usr/bin/env python3
"""diffusers' `eta` and the TCD scheduler, as the pipelines draw them, for Lumen's tests.

The pipelines pass their `eta` argument (0.0 unless the caller says) to the schedulers whose
`step` takes one: DDIM (the share of fresh noise in each step) and TCD (its gamma; the step's own
default, 0.3, is never used through a pipeline). Lumen had no eta, and ran LCM in TCD's place.
Run by hand, never in CI, after tools/make_fixtures.py, tools/make_sdxl_fixtures.py and
tools/make_default_fixtures.py (the venv of tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_eta_fixtures.py

Writes, under Tests/Fixtures/eta/:

  tcd/scheduler_config.json   TCDScheduler.from_config(tiny-sd's config), as save_config writes it
  reference.safetensors       f32 images (numpy, [0, 1]) `image.<case>`; the requests in __metadata__
                              (`model`: the fixture folder, `scheduler`: Lumen's name of a scheduler
                              chosen on it as `--scheduler` does, null for the folder's own; `eta`,
                              `init`, `strength`)

Cases:
  tcd              tiny-sd with tcd/scheduler_config.json as its scheduler, eta 0 (the pipeline's default)
  tcd-eta          the same, eta 0.3 (noise drawn after every step but the last)
  tcd-img2img      the same on StableDiffusionImg2ImgPipeline with defaults/init.png, strength 0.6, eta 0.3
  sdxl-tcd-eta     tiny-sdxl with TCDScheduler.from_config(its config) (`--scheduler tcd`), eta 0.3
  ddim-eta         tiny-sd with DDIMScheduler.from_config(its config) (`--scheduler ddim`), eta 0.5
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
from diffusers import DDIMScheduler, TCDScheduler  # noqa: E402

OUT = os.path.join(base.FIXTURES, "eta")
REQUEST = dict(prompt="a small green square", negative_prompt="a triangle", num_inference_steps=4, guidance_scale=3.0, seed=21)
CASES = {
    "tcd": ("tiny-sd", None, "StableDiffusionPipeline", dict(eta=0.0, height=64, width=64)),
    "tcd-eta": ("tiny-sd", None, "StableDiffusionPipeline", dict(eta=0.3, height=64, width=64)),
    "tcd-img2img": ("tiny-sd", None, "StableDiffusionImg2ImgPipeline", dict(eta=0.3, init="defaults/init.png", strength=0.6)),
    "sdxl-tcd-eta": ("tiny-sdxl", "tcd", "StableDiffusionXLPipeline", dict(eta=0.3, height=64, width=64)),
    "ddim-eta": ("tiny-sd", "ddim", "StableDiffusionPipeline", dict(eta=0.5, height=64, width=64, num_inference_steps=6)),
}
CHOSEN = {"tcd": TCDScheduler, "ddim": DDIMScheduler}


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "tcd"))
    sd_config = diffusers.StableDiffusionPipeline.from_pretrained(base.FOLDER, local_files_only=True).scheduler.config
    TCDScheduler.from_config(sd_config).save_config(os.path.join(OUT, "tcd"))
    ref, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "tiny-sd-tcd")
        shutil.copytree(base.FOLDER, folder)
        shutil.rmtree(os.path.join(folder, "scheduler"))
        shutil.copytree(os.path.join(OUT, "tcd"), os.path.join(folder, "scheduler"))
        index = json.load(open(os.path.join(folder, "model_index.json")))
        index["scheduler"] = ["diffusers", "TCDScheduler"]
        json.dump(index, open(os.path.join(folder, "model_index.json"), "w"), indent=2)
        for name, (model, chosen, pipeline, extra) in CASES.items():
            path = folder if chosen is None else os.path.join(base.FIXTURES, model)
            pipe = getattr(diffusers, pipeline).from_pretrained(path, dtype=torch.float32, local_files_only=True,
                                                                **({} if "xl" in pipeline.lower() else dict(safety_checker=None)))
            if chosen is not None:
                pipe.scheduler = CHOSEN[chosen].from_config(pipe.scheduler.config)
            else:
                assert type(pipe.scheduler) is TCDScheduler
            request = dict(REQUEST, **extra)
            args = {k: v for k, v in request.items() if k not in ("seed", "init")}
            if "init" in request:
                args["image"] = Image.open(os.path.join(base.FIXTURES, request["init"])).convert("RGB")
            out = pipe(**args, generator=torch.Generator().manual_seed(request["seed"]), output_type="np").images
            assert np.isfinite(out).all(), name
            ref["image." + name] = torch.from_numpy(out).float().contiguous()
            meta[name] = json.dumps(dict(request, model=model if chosen else "eta/tcd", scheduler=chosen), sort_keys=True)
    # eta does something at this size: the two TCD draws differ.
    assert (ref["image.tcd"] - ref["image.tcd-eta"]).abs().max() > 4 / 255
    base.write_reference(ref, os.path.join(OUT, "reference.safetensors"), "tools/make_eta_fixtures.py", **meta)
    base.list_written(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
