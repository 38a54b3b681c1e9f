#!/usr/bin/env python3
"""Generates the LCM-LoRA fixtures: the recipe of the LCM-LoRA model cards on the tiny SD and
SDXL models: load the LoRA (the random kohya adapters of tools/make_lora_fixtures.py stand in for
LCM-LoRA's weights: the arithmetic is the same), swap in LCMScheduler.from_config(the model's own
scheduler config), 4 steps, guidance_scale 1.0 (no classifier-free guidance).

Run by hand, never in CI, from the repository root, after make_lora_fixtures.py:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_lcm_lora_fixtures.py

It writes Tests/Fixtures/lcm-lora-reference.safetensors (f32): <m>.image [1,64,64,3] for m in
sd (tiny-sd + lora/tiny-kohya.safetensors) and sdxl (tiny-sdxl + lora/tiny-sdxl-kohya.safetensors),
the request in metadata '<m>.request', and '<m>.scheduler_config' (what LCMScheduler used).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers, transformers  # noqa: E402
from diffusers import LCMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: E402

REFERENCE = os.path.join(base.FIXTURES, "lcm-lora-reference.safetensors")
MODELS = {"sd": ("tiny-sd", "tiny-kohya.safetensors", StableDiffusionPipeline),
          "sdxl": ("tiny-sdxl", "tiny-sdxl-kohya.safetensors", StableDiffusionXLPipeline)}


def main():
    base.set_up()
    ref, metadata = {}, {}
    for key, (folder, lora, cls) in MODELS.items():
        pipe = cls.from_pretrained(os.path.join(base.FIXTURES, folder), dtype=torch.float32, local_files_only=True)
        pipe.load_lora_weights(os.path.join(base.FIXTURES, "lora", lora), adapter_name="lcm")
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        request = dict(prompt=base.PROMPTS[0], num_inference_steps=4, guidance_scale=1.0, height=64, width=64, seed=5)
        args = {k: v for k, v in request.items() if k != "seed"}
        image = torch.from_numpy(pipe(**args, generator=torch.Generator().manual_seed(request["seed"]),
                                      output_type="np").images).float()
        assert torch.isfinite(image).all() and image.std() > 0.02, key
        ref[f"{key}.image"] = image.contiguous()
        metadata[f"{key}.request"] = json.dumps(request, sort_keys=True)
        metadata[f"{key}.scheduler_config"] = json.dumps({k: v for k, v in dict(pipe.scheduler.config).items()
                                                          if k != "_use_default_values"}, sort_keys=True, default=str)
    base.save_safetensors(ref, REFERENCE, metadata=dict(metadata, **{
        "format": "pt", "generator": "tools/make_lcm_lora_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__}, sort_keys=True)}))
    os.chmod(REFERENCE, 0o644)
    print(json.dumps(metadata, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
