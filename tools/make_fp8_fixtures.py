#!/usr/bin/env python3
"""A float8 single-file checkpoint and diffusers' image of it, for Lumen's tests.

Checkpoints are shared in float8 (e4m3fn, e5m2) to halve their size; diffusers' from_single_file
reads them and widens every weight to the pipeline's dtype. Lumen refused the dtype. Run by hand,
never in CI, after tools/make_fixtures.py (the venv of tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_fp8_fixtures.py

Writes, under Tests/Fixtures/fp8/:

  tiny-sd-e4m3.safetensors   Tests/Fixtures/tiny-sd.safetensors with every floating tensor cast to
                             torch.float8_e4m3fn (round to nearest even, as torch casts)
  reference.safetensors      image [1, 64, 64, 3] f32 (numpy, [0, 1]):
                             StableDiffusionPipeline.from_single_file(that file, config=Tests/Fixtures/tiny-sd,
                             torch_dtype=float32), the request in __metadata__
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

OUT = os.path.join(base.FIXTURES, "fp8")
REQUEST = dict(prompt="a small green square", negative_prompt="a triangle", num_inference_steps=4, guidance_scale=5.0,
               height=64, width=64, seed=3)


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    source = load_file(os.path.join(base.FIXTURES, "tiny-sd.safetensors"))
    fp8 = {k: (v.to(torch.float8_e4m3fn) if v.is_floating_point() else v) for k, v in source.items()}
    path = os.path.join(OUT, "tiny-sd-e4m3.safetensors")
    save_file(fp8, path)
    pipe = diffusers.StableDiffusionPipeline.from_single_file(path, config=base.FOLDER, torch_dtype=torch.float32,
                                                              local_files_only=True, safety_checker=None)
    assert pipe.unet.conv_in.weight.dtype == torch.float32
    # The weights are the file's float8 values, widened exactly.
    assert torch.equal(pipe.unet.conv_in.weight, fp8["model.diffusion_model.input_blocks.0.0.weight"].float())
    args = {k: v for k, v in REQUEST.items() if k != "seed"}
    image = pipe(**args, generator=torch.Generator().manual_seed(REQUEST["seed"]), output_type="np").images
    assert np.isfinite(image).all()
    base.write_reference({"image": torch.from_numpy(image).float()}, os.path.join(OUT, "reference.safetensors"), "tools/make_fp8_fixtures.py",
                         request=json.dumps(REQUEST, sort_keys=True))
    base.list_written(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
