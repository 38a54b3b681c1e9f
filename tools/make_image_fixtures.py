#!/usr/bin/env python3
"""Small PNGs of every colour type for the image-reading tests, with the RGB values PIL's
convert("RGB") gives (the oracle diffusers' img2img preprocessing uses).

Run by hand: .venv-fixtures/bin/python tools/make_image_fixtures.py
Writes Tests/Fixtures/images/*.png, expected.json and alpha.json (PIL's alpha channel).
"""
import json
import os

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "images")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    w, h = 5, 3
    expected = {}
    cases = {
        "rgb8": Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB"),
        "rgba8": Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA"),
        "grey8": Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L"),
        "greyalpha8": Image.fromarray(rng.integers(0, 256, (h, w, 2), dtype=np.uint8), "LA"),
        "palette": Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(
            "P", palette=Image.Palette.ADAPTIVE, colors=7),
        "grey1": Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8) * 255, "L").convert("1"),
    }
    for name, img in cases.items():
        path = os.path.join(OUT, name + ".png")
        img.save(path)
        back = Image.open(path).convert("RGB")
        expected[name] = {"width": w, "height": h, "rgb": np.asarray(back).reshape(-1).tolist()}
    # 16-bit grey: PIL reads it as "I;16"; the expected values are the stored samples / 65535.
    grey16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    Image.fromarray(grey16).save(os.path.join(OUT, "grey16.png"))  # uint16 → mode I;16
    expected["grey16"] = {"width": w, "height": h, "samples16": np.repeat(grey16.reshape(-1), 3).tolist()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    # Alpha, read apart from the colours (OpenAI's edit masks are transparency): PIL's
    # convert("RGBA").getchannel("A"), null for a file without alpha, beside convert("RGB").
    # palette-trns has a tRNS chunk.
    trns = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=5)
    trns.save(os.path.join(OUT, "palette-trns.png"), transparency=bytes([0, 90, 128, 200, 255]))
    alpha = {}
    for name in ["rgb8", "rgba8", "greyalpha8", "palette-trns"]:
        img = Image.open(os.path.join(OUT, name + ".png"))
        has = img.mode in ("RGBA", "LA") or "transparency" in img.info
        alpha[name] = {"rgb": np.asarray(img.convert("RGB")).reshape(-1).tolist(),
                       "alpha": np.asarray(img.convert("RGBA").getchannel("A")).reshape(-1).tolist() if has else None}
    with open(os.path.join(OUT, "alpha.json"), "w") as f:
        json.dump(alpha, f, indent=1, sort_keys=True)
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
