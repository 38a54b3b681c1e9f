#!/usr/bin/env python3
"""Fixtures that hold Lumen's Swift port of the adherence scorer (Sources/LumenEval) to
tools/adherence.py: a set of 64x64 images, their captions, tools/adherence.py's parse of each and
its figures for the set, in Tests/Fixtures/adherence/.

Run by hand, never in CI (numpy + Pillow; torch/diffusers only with --model). From the repository root:

    .venv-fixtures/bin/python tools/make_adherence_fixtures.py --model Models/demo     # ~20 s

The images: held-out ground-truth renderings (clean; blurred with noise of sigma 12; blurred twice
with noise of sigma 30), uniform noise, and with --model the demo model's own generations by
diffusers (DDIM, 12 steps, guidance 4), which is what the scorer meets in practice: soft edges,
stray blobs, wrong colours.
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lumen_tools_common as common  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import adherence  # noqa: E402
import eval_adherence  # noqa: E402
import shapes_dataset as sd  # noqa: E402

OUT = os.path.join(common.REPO, "Tests", "Fixtures", "adherence")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a shapes-world diffusers folder whose generations join the set")
    p.add_argument("--out", default=OUT)
    a = p.parse_args(argv)

    ev = sd.eval_set()
    rng = np.random.default_rng(11)
    picks = [ev[int(i * len(ev) / 24)] for i in range(24)]
    truth = np.stack([sd.render(s, seed) for _, seed, _, s in picks])
    caps = [c for _, _, c, _ in picks]
    light = np.clip(adherence.box_blur(truth) + rng.normal(0, 12, truth.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(adherence.box_blur(adherence.box_blur(truth).astype(np.uint8)) + rng.normal(0, 30, truth.shape),
                    0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, (6,) + truth.shape[1:], dtype=np.uint8)
    items = ([(im, c, "truth") for im, c in zip(truth, caps)] + [(im, c, "blur+noise12") for im, c in zip(light, caps)]
             + [(im, c, "blur2+noise30") for im, c in zip(heavy, caps)] + [(im, caps[i], "uniform noise") for i, im in enumerate(noise)])
    if a.model:
        gen_items = eval_adherence.prompts(40)
        images = eval_adherence.generate_diffusers(a.model, gen_items, "ddim", 12, 4.0)
        items += [(im, c, "diffusers ddim 12 steps") for im, (_, _, c) in zip(images, gen_items)]

    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    records = []
    for i, (im, cap, kind) in enumerate(items):
        name = f"{i:04d}.png"
        Image.fromarray(im).save(os.path.join(a.out, name), optimize=True)
        parsed = adherence.parse_image(im)
        records.append({"file": name, "caption": cap, "kind": kind, "parse": parsed})
    captions = [r["caption"] for r in records]
    report = adherence.score([np.asarray(Image.open(os.path.join(a.out, r["file"])).convert("RGB")) for r in records],
                             captions)
    blob = {"generator": "tools/make_adherence_fixtures.py", "model": a.model and os.path.relpath(a.model, common.REPO),
            "images": records,
            "report": {k: (None if isinstance(v, float) and v != v else v) for k, v in report.items()}}
    with open(os.path.join(a.out, "parses.json"), "w") as f:
        json.dump(blob, f, indent=1, default=int)
        f.write("\n")
    print(adherence.format_table([("fixture set", report)]))
    print(f"wrote {len(records)} images and parses.json to {a.out} ({common.folder_bytes(a.out):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
