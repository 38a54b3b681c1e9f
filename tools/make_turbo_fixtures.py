#!/usr/bin/env python3
"""Generates the Turbo fixtures: the tiny SD and SDXL models (Tests/Fixtures/tiny-sd, tiny-sdxl,
linked, never rewritten) with the scheduler configs SD-Turbo and SDXL-Turbo ship (the issue's
recipe: EulerAncestralDiscreteScheduler with `timestep_spacing` "trailing"; stabilityai's
scheduler_config.json fields otherwise as Stable Diffusion's), run as their model cards say:
1 to 4 steps, guidance_scale 0.0 (no classifier-free guidance, no negative batch).

Run by hand, never in CI, from the repository root, after make_fixtures.py and make_sdxl_fixtures.py:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_turbo_fixtures.py

It writes, under Tests/Fixtures/:
  tiny-sd-turbo/, tiny-sdxl-turbo/   model_index.json and scheduler/ of their own; every network and
                                     tokenizer a symlink to tiny-sd's / tiny-sdxl's
  turbo-reference.safetensors (f32)  <m>.image_<n> [1,64,64,3] for m in sd, sdxl and n in 1, 4:
                                     the pipeline (StableDiffusionPipeline / StableDiffusionXLPipeline
                                     from the folder, float32) with the request in metadata
                                     '<m>.request_<n>' (guidance_scale 0.0, 64x64, seed 11), np output
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers, transformers  # noqa: E402
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: E402

REFERENCE = os.path.join(base.FIXTURES, "turbo-reference.safetensors")
TURBO_SCHEDULER = {"_class_name": "EulerAncestralDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                   "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
                   "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
                   "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
                   "timestep_spacing": "trailing", "trained_betas": None, "use_karras_sigmas": False}
MODELS = {"sd": ("tiny-sd", "tiny-sd-turbo", StableDiffusionPipeline),
          "sdxl": ("tiny-sdxl", "tiny-sdxl-turbo", StableDiffusionXLPipeline)}


def linked_folder(source, target):
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.makedirs(os.path.join(target, "scheduler"))
    for part in sorted(os.listdir(os.path.join(base.FIXTURES, source))):
        if part in ("scheduler",):
            continue
        src = os.path.join(base.FIXTURES, source, part)
        if part == "model_index.json":
            with open(src) as f:
                index = json.load(f)
            index["scheduler"] = ["diffusers", TURBO_SCHEDULER["_class_name"]]
            with open(os.path.join(target, part), "w") as f:
                json.dump(index, f, indent=2, sort_keys=True)
                f.write("\n")
        else:
            os.symlink(os.path.join("..", source, part), os.path.join(target, part))
    with open(os.path.join(target, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(TURBO_SCHEDULER, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    base.set_up()
    ref, metadata = {}, {}
    for key, (source, name, cls) in MODELS.items():
        folder = os.path.join(base.FIXTURES, name)
        linked_folder(source, folder)
        pipe = cls.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
        assert pipe.scheduler.config.timestep_spacing == "trailing"
        for steps in (1, 4):
            request = dict(prompt=base.PROMPTS[0], num_inference_steps=steps, guidance_scale=0.0, height=64, width=64, seed=11)
            args = {k: v for k, v in request.items() if k != "seed"}
            image = torch.from_numpy(pipe(**args, generator=torch.Generator().manual_seed(request["seed"]),
                                          output_type="np").images).float()
            assert torch.isfinite(image).all() and image.std() > 0.02, (key, steps)
            ref[f"{key}.image_{steps}"] = image.contiguous()
            metadata[f"{key}.request_{steps}"] = json.dumps(request, sort_keys=True)
        pipe.scheduler.set_timesteps(4)
        metadata[f"{key}.timesteps_4"] = json.dumps([int(t) for t in pipe.scheduler.timesteps])
    for k in ("sd", "sdxl"):
        assert (ref[f"{k}.image_1"] - ref[f"{k}.image_4"]).abs().max() > 0.01
    base.save_safetensors(ref, REFERENCE, metadata=dict(metadata, **{
        "format": "pt", "generator": "tools/make_turbo_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__}, sort_keys=True),
        "scheduler_config": json.dumps(TURBO_SCHEDULER, sort_keys=True)}))
    os.chmod(REFERENCE, 0o644)
    print(metadata)
    return 0


if __name__ == "__main__":
    sys.exit(main())
