#!/usr/bin/env python3
"""Writes Pillow's Lanczos resizes for the resize test (Image.resize(size, Image.LANCZOS) on RGB,
as the hires fix's pixel upscaler and diffusers' image processors use it).

Run by hand, never in CI: .venv-fixtures/bin/python tools/make_resize_fixtures.py
Writes Tests/Fixtures/resize-reference.safetensors: uint8 [H, W, 3] per case, inputs from
Tests/Fixtures/images (canny-noisy.png 96x80, init64.png).
"""
import os

import numpy as np
import PIL
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
CASES = [("noisy-up", "canny-noisy.png", (144, 120)), ("noisy-down", "canny-noisy.png", (40, 33)),
         ("init-up", "init64.png", (96, 96)), ("init-x2", "init64.png", (128, 128)), ("init-wide", "init64.png", (100, 64))]


def main():
    ref = {}
    for name, src, size in CASES:
        image = Image.open(os.path.join(ROOT, "images", src)).convert("RGB")
        ref[name] = torch.from_numpy(np.asarray(image.resize(size, Image.LANCZOS)).copy())
        print(name, size)
    save_file(ref, os.path.join(ROOT, "resize-reference.safetensors"), metadata={"pillow": PIL.__version__})


if __name__ == "__main__":
    main()
