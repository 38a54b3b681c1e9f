#!/usr/bin/env python3
"""Writes OpenCV's Canny edge maps for the canny preprocessor's test: cv2.Canny(image, 100, 200)
on RGB images, as ControlNet's examples call it (tools/requirements-fixtures.txt pins OpenCV).

Run by hand, never in CI: .venv-fixtures/bin/python tools/make_canny_fixtures.py
Writes Tests/Fixtures/images/canny-*.png (inputs) and canny-reference.safetensors (uint8 edges
[H, W] per input, and thresholds other than the default for one).
"""
import os

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")


def main():
    rng = np.random.default_rng(11)
    shapes = Image.new("RGB", (96, 80), (30, 60, 220))
    d = ImageDraw.Draw(shapes)
    d.ellipse((10, 8, 50, 48), fill=(220, 30, 30))
    d.rectangle((52, 30, 90, 70), fill=(240, 220, 40))
    d.polygon([(5, 75), (40, 55), (60, 78)], fill=(30, 170, 50))
    shapes = shapes.filter(ImageFilter.GaussianBlur(1.2))
    noisy = np.clip(np.asarray(shapes).astype(np.int32) + rng.integers(-25, 26, (80, 96, 3)), 0, 255).astype(np.uint8)
    inputs = {"shapes": np.asarray(shapes), "noisy": noisy,
              "init": np.asarray(Image.open(os.path.join(ROOT, "images", "init64.png")).convert("RGB"))}
    ref = {}
    for name, rgb in inputs.items():
        Image.fromarray(rgb).save(os.path.join(ROOT, "images", f"canny-{name}.png"))
        ref[name] = torch.from_numpy(cv2.Canny(rgb, 100, 200))
        print(name, rgb.shape, int((ref[name] > 0).sum()), "edge pixels")
    ref["noisy-50-120"] = torch.from_numpy(cv2.Canny(inputs["noisy"], 50, 120))
    save_file(ref, os.path.join(ROOT, "canny-reference.safetensors"), metadata={"opencv": cv2.__version__})


if __name__ == "__main__":
    main()
