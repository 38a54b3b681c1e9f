#!/usr/bin/env python3
"""The demo-model pictures of the README and docs/quality.md, drawn by the `lumen` binary:

  docs/images/red-circle.png       the README's first command, exactly as `lumen generate` writes it
                                   (64x64, the demo model's size)
  docs/images/red-circle-x4.png    the same, enlarged 4x with nearest-neighbour pixels for viewing
  docs/images/heldout-grid.png     16 held-out prompts (spread over the evaluation set) as Lumen draws
                                   them with `lumen eval`'s settings, next to the scene the caption
                                   describes, enlarged 3x; the captions are printed to stdout

Run by hand, never in CI (Pillow only). From the repository root, after `swift build -c release`:

    .venv-fixtures/bin/python tools/make_readme_images.py --lumen .build/release/lumen
"""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lumen_tools_common as common  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import eval_adherence  # noqa: E402
import shapes_dataset as sd  # noqa: E402

README_PROMPT = "a red circle on a blue background"
README_SEED = 42


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lumen", default=os.path.join(common.REPO, ".build", "release", "lumen"))
    p.add_argument("--out", default=os.path.join(common.REPO, "docs", "images"))
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)

    single = os.path.join(a.out, "red-circle.png")
    subprocess.run([a.lumen, "generate", README_PROMPT, "--seed", str(README_SEED), "-o", single], check=True)
    im = Image.open(single).convert("RGB")
    im.resize((im.width * 4, im.height * 4), Image.NEAREST).save(os.path.join(a.out, "red-circle-x4.png"), optimize=True)

    items = eval_adherence.prompts(a.count)
    scenes = {i: s for i, _, _, s in sd.eval_set()}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([a.lumen, "eval", "--limit", str(a.count), "--steps", str(a.steps), "--guidance", str(a.guidance),
                        "--save", tmp], check=True, stdout=subprocess.DEVNULL)
        pairs = []
        for i, seed, caption in items:
            drawn = np.asarray(Image.open(os.path.join(tmp, f"{i:04d}.png")).convert("RGB"))
            pairs.append(np.concatenate([sd.render(scenes[i], seed), drawn], axis=1))
            print(f"{i:4d}  {caption}")
    grid = Image.fromarray(sd.grid(np.stack(pairs), columns=4))
    grid.resize((grid.width * 3, grid.height * 3), Image.NEAREST).save(os.path.join(a.out, "heldout-grid.png"), optimize=True)
    print("wrote", single, "and the grid in", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
