#!/usr/bin/env python3
"""Scheduler configs as diffusers saves them, and the images its pipeline draws with them as the
tiny model's own scheduler, for Lumen's scheduler-config tests.

Run by hand, never in CI, after tools/make_fixtures.py (the venv of tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_scheduler_config_fixtures.py

Writes, under Tests/Fixtures/scheduler-configs/:

  dpmpp-2m/scheduler_config.json      DPMSolverMultistepScheduler.from_config(tiny-sd's config) as
                                      save_config writes it: with `"lambda_min_clipped": -Infinity`
                                      (Python's json writes infinities as bare words, which standard
                                      JSON lacks), as in every folder shipped with that scheduler.
  ddim-outdated/scheduler_config.json DDIMScheduler.from_config(tiny-sd's config, clip_sample=True,
                                      steps_offset=0): the outdated values StableDiffusionPipeline
                                      rewrites as it is built (steps_offset 1, clip_sample false).
  reference.safetensors               f32 images [1, 64, 64, 3] (numpy, [0, 1]) of StableDiffusionPipeline loaded
                                      from tiny-sd with each config as its scheduler (the folder's
                                      model_index.json naming the class): `image.<case>`; the cases'
                                      requests are in __metadata__. Cases: each config's own
                                      scheduler, and `ddim-outdated-euler`, EulerDiscreteScheduler
                                      from_config(the pipeline's rewritten DDIM config), what
                                      `--scheduler euler` means.
"""

import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, StableDiffusionPipeline  # noqa: E402

OUT = os.path.join(base.FIXTURES, "scheduler-configs")
REQUEST = dict(prompt="a small green square", negative_prompt="a triangle", num_inference_steps=6, guidance_scale=6.0,
               height=64, width=64, seed=3)


def folder_with(scheduler, tmp):
    """A copy of tiny-sd whose scheduler (and model_index.json entry) is `scheduler`."""
    d = os.path.join(tmp, type(scheduler).__name__)
    shutil.copytree(base.FOLDER, d)
    scheduler.save_config(os.path.join(d, "scheduler"))
    index = json.load(open(os.path.join(d, "model_index.json")))
    index["scheduler"] = ["diffusers", type(scheduler).__name__]
    json.dump(index, open(os.path.join(d, "model_index.json"), "w"), indent=2)
    return d


def draw(pipe):
    args = {k: v for k, v in REQUEST.items() if k != "seed"}
    image = pipe(**args, generator=torch.Generator().manual_seed(REQUEST["seed"]), output_type="np").images
    return torch.from_numpy(image).float().contiguous()


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    config = StableDiffusionPipeline.from_pretrained(base.FOLDER, local_files_only=True).scheduler.config
    cases = {"dpmpp-2m": DPMSolverMultistepScheduler.from_config(config),
             "ddim-outdated": DDIMScheduler.from_config(config, clip_sample=True, steps_offset=0)}
    ref, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, scheduler in cases.items():
            os.makedirs(os.path.join(OUT, name))
            scheduler.save_config(os.path.join(OUT, name))
            folder = folder_with(scheduler, tmp)
            pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
            assert type(pipe.scheduler) is type(scheduler)
            ref["image." + name] = draw(pipe)
            meta[name] = json.dumps(dict(REQUEST, scheduler=None), sort_keys=True)
            if name == "ddim-outdated":
                # the pipeline rewrote the outdated values
                assert pipe.scheduler.config.clip_sample is False and pipe.scheduler.config.steps_offset == 1
                pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
                ref["image.ddim-outdated-euler"] = draw(pipe)
                meta["ddim-outdated-euler"] = json.dumps(dict(REQUEST, scheduler="euler"), sort_keys=True)
    text = open(os.path.join(OUT, "dpmpp-2m", "scheduler_config.json")).read()
    assert '"lambda_min_clipped": -Infinity' in text, text
    ddim = json.load(open(os.path.join(OUT, "ddim-outdated", "scheduler_config.json")))
    assert ddim["clip_sample"] is True and ddim["steps_offset"] == 0, ddim
    base.save_safetensors({k: v.contiguous().clone() for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"), metadata={
        "format": "pt", "generator": "tools/make_scheduler_config_fixtures.py", **meta,
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}, sort_keys=True)})
    for root, _, files in os.walk(OUT):
        for f in sorted(files):
            p = os.path.join(root, f)
            os.chmod(p, 0o644)
            print(f"  {os.path.relpath(p, base.REPO):60s} {os.path.getsize(p):>8,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
