#!/usr/bin/env python3
"""Generates the LCM-distilled UNet fixture: tiny-sd's configuration with `time_cond_proj_dim` 8
(the guidance scale enters the UNet as an embedding, diffusers' get_guidance_scale_embedding,
through time_embedding.cond_proj), random weights, and LCMScheduler made from tiny-sd's scheduler
config with original_inference_steps 50, as LCM-distilled SD repositories ship it; drawn by
StableDiffusionPipeline (which passes timestep_cond and runs no classifier-free guidance for such
a UNet) at guidance_scale 8, 4 steps.

Run by hand, never in CI, from the repository root, after make_fixtures.py:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_lcm_fixtures.py

It writes, under Tests/Fixtures/: tiny-sd-lcm/ (unet/ f16 and scheduler/ of its own, model_index.json;
text encoder, tokenizer and VAE symlinks to tiny-sd's) and lcm-reference.safetensors (f32):
  image [1,64,64,3]       the request in metadata 'request' (np output)
  guidance_embedding [1,8] get_guidance_scale_embedding(tensor([8 - 1]), 8) as the pipeline computes it
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers, transformers  # noqa: E402
from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402

FOLDER = os.path.join(base.FIXTURES, "tiny-sd-lcm")
REFERENCE = os.path.join(base.FIXTURES, "lcm-reference.safetensors")
COND_DIM = 8
REQUEST = dict(prompt=base.PROMPTS[0], num_inference_steps=4, guidance_scale=8.0, height=64, width=64, seed=3)


def main():
    base.set_up()
    if os.path.isdir(FOLDER):
        shutil.rmtree(FOLDER)
    os.makedirs(FOLDER)
    for part in ("text_encoder", "tokenizer", "vae"):
        os.symlink(os.path.join("..", "tiny-sd", part), os.path.join(FOLDER, part))
    source = StableDiffusionPipeline.from_pretrained(os.path.join(base.FIXTURES, "tiny-sd"), dtype=torch.float32,
                                                     local_files_only=True)
    unet = UNet2DConditionModel(**dict(source.unet.config, time_cond_proj_dim=COND_DIM))
    base.randomise(unet, 2600)
    unet.eval()
    unet.to(torch.float16).save_pretrained(os.path.join(FOLDER, "unet"), safe_serialization=True)
    scheduler = LCMScheduler.from_config(source.scheduler.config, original_inference_steps=50)
    scheduler.save_pretrained(os.path.join(FOLDER, "scheduler"))
    with open(os.path.join(base.FIXTURES, "tiny-sd", "model_index.json")) as f:
        index = json.load(f)
    index["scheduler"] = ["diffusers", "LCMScheduler"]
    with open(os.path.join(FOLDER, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")

    pipe = StableDiffusionPipeline.from_pretrained(FOLDER, dtype=torch.float32, local_files_only=True)
    assert type(pipe.scheduler).__name__ == "LCMScheduler" and pipe.unet.config.time_cond_proj_dim == COND_DIM
    args = {k: v for k, v in REQUEST.items() if k != "seed"}
    image = torch.from_numpy(pipe(**args, generator=torch.Generator().manual_seed(REQUEST["seed"]), output_type="np").images)
    assert not pipe.do_classifier_free_guidance
    assert torch.isfinite(image).all() and image.std() > 0.02
    other = torch.from_numpy(pipe(**dict(args, guidance_scale=2.0), generator=torch.Generator().manual_seed(REQUEST["seed"]),
                                  output_type="np").images)
    assert (other - image).abs().max() > 0.01  # the embedding matters
    embedding = pipe.get_guidance_scale_embedding(torch.tensor([REQUEST["guidance_scale"] - 1]), embedding_dim=COND_DIM)
    ref = {"image": image.float().contiguous(), "guidance_embedding": embedding.float().contiguous()}
    base.save_safetensors(ref, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_lcm_fixtures.py", "request": json.dumps(REQUEST, sort_keys=True),
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__}, sort_keys=True)})
    for d, _, fs in os.walk(FOLDER):
        for f in fs:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    os.chmod(REFERENCE, 0o644)
    print(base.file_size(FOLDER), "bytes in", FOLDER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
