#!/usr/bin/env python3
"""Prompt adherence of shapes-world images, by counting pixels (no learned model): issue 6.

Run by hand, never in CI (numpy only). From the repository root:

    .venv-fixtures/bin/python tools/adherence.py --self-test          # about 10 s on one core

Used as a module by tools/eval_adherence.py and tools/train_demo_model.py.

Parsing an RGB image (any square-ish size; 64x64 is the demo model's):
  1. every pixel gets its nearest palette colour (tools/shapes_dataset.py PALETTE, RGB distance);
  2. the background is the most common colour of the 2-pixel border ring;
  3. objects are the 4-connected components of non-background pixels, largest first; components
     under 12 px (at 64x64; scaled with the area) are speckle and dropped;
  4. an object's colour is the most common colour of its interior (pixels whose 4 neighbours are in
     it; all of it when it has no interior), so anti-aliased rims, which blend two colours into a
     third, do not decide it;
  5. its pixels at least half covered are kept (each pixel projected on the line from the measured
     background colour to the object's), and its kind is the nearest prototype in a 7-number shape descriptor: fill ratio of the bounding
     box, the widths of the rows at 1/4, 1/2, 3/4 of its height (over the box width) and the
     heights of the columns at 1/4, 1/2, 3/4 of its width (over the box height). A square fills its
     box; a circle fills pi/4 with rows 0.87 / 1 / 0.87; an upright triangle fills half with rows
     0.25 / 0.5 / 0.75; a cross fills 5/9 with rows and columns 1/3 / 1 / 1/3. The prototypes (192)
     are this module's own segmentation of rendered shapes at import (three extents, sub-pixel
     shifts, sharp and 3x3-blurred), so they match the renderer, small shapes' pixel steps included;
  6. size: the box's longer side over 23 px (at 64x64) is large, else small;
     position: the box centre's nearest of the five anchors (corners at 1/4, 3/4; the centre).

Scoring a caption against a parse: each attribute the caption states is matched or not, grouped as
  colour   = background colour + object colour(s)   (also reported apart)
  shape    = object kind(s)
  size, position (one-shape captions that state them)
For a one-shape caption the largest object is compared; for a two-shape caption the two largest,
in whichever of the two pairings matches more. A prompt set's figure for a group is matched / stated
over all its captions. R-precision: each image is scored against its own caption and every other
caption of the set (all of them, so the figure needs no random draw and Lumen's Swift port of this
scorer, Sources/LumenEval, computes it identically); it counts 1 when its own caption scores
strictly highest, 1/(n+1) when it ties with n others at the top, else 0. Chance is about 1/N for N
distinct captions (1/324 on the held-out set).

Lumen's `lumen eval` scores with a Swift port of this module; the shape prototypes it uses are this
module's, written into Sources/LumenEval/ShapePrototypes.swift by --write-swift-prototypes, and
tools/make_adherence_fixtures.py records this module's parses of a set of images so a test can hold
the port to them.

The self-test (self_test(), --self-test) checks the scorer on ground-truth renderings of the
held-out evaluation set (every figure must be >= 98 %), on the same with noise and blur, and on
two chance baselines (uniform noise images; ground truth scored against other captions).
"""

import argparse
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import shapes_dataset as sd  # noqa: E402

PALETTE_NAMES = list(sd.PALETTE)
PALETTE_RGB = np.array([sd.PALETTE[c] for c in PALETTE_NAMES], np.float32)
REFERENCE = sd.IMAGE_SIZE
MIN_AREA = 12
LARGE_EXTENT = 23.0
R_PRECISION_DISTRACTORS = None   # None: every other caption of the set
GROUPS = ["colour", "background", "object colour", "shape", "size", "position"]


def palette_labels(img):
    """[H, W] int: index of each pixel's nearest palette colour."""
    x = np.asarray(img, np.float32)[..., :3]
    d = ((x[:, :, None, :] - PALETTE_RGB[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def components(mask):
    """4-connected components of a boolean mask: list of (ys, xs) index arrays, largest first."""
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    out = []
    flat = mask.ravel()
    for start in np.flatnonzero(flat):
        y0, x0 = divmod(int(start), w)
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, ys, xs = [(y0, x0)], [], []
        while stack:
            y, x = stack.pop()
            ys.append(y)
            xs.append(x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append((np.array(ys), np.array(xs)))
    out.sort(key=lambda c: -len(c[0]))
    return out


def descriptor(mask):
    """The 7-number shape descriptor of a boolean mask cropped to its bounding box."""
    h, w = mask.shape
    fill = mask.mean()
    rows = [mask[min(h - 1, int(round(f * (h - 1))))].mean() for f in (0.25, 0.5, 0.75)]
    cols = [mask[:, min(w - 1, int(round(f * (w - 1))))].mean() for f in (0.25, 0.5, 0.75)]
    return np.array([fill] + rows + cols, np.float32)


def box_blur(images):
    """3x3 box blur of uint8 [N, H, W, 3] (edges repeated), as float32."""
    f = images.astype(np.float32)
    h, w = f.shape[1:3]
    p = np.pad(f, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return sum(p[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9


def _prototypes():
    """Descriptors of this module's own segmentation of rendered shapes, per kind: three extents,
    sub-pixel shifts and two colour pairs, so small shapes' pixel steps are covered."""
    protos = []
    for kind in sd.KINDS:
        for extent in (sd.SIZES["small"], sd.PAIR_EXTENT, sd.SIZES["large"]):
            for shift in (0.0, 0.25, 0.5, 0.75):
                for fg, bg in (("red", "blue"), ("white", "black")):
                    lay = sd.Layout(sd.PALETTE[bg], [(sd.Shape(fg, kind), 32 + shift, 32 + shift / 2, extent,
                                                      sd.PALETTE[fg])])
                    img = sd.render_layout(lay)
                    for im in (img, box_blur(img[None])[0]):
                        objs = _segment(im)[1]
                        assert len(objs) == 1
                        protos.append((kind, descriptor(objs[0]["mask"])))
    return protos


def classify_kind(mask):
    """The kind of the nearest prototype descriptor."""
    f = descriptor(mask)
    return min(PROTOTYPES, key=lambda kp: float(((kp[1] - f) ** 2).sum()))[0]


def _segment(img):
    """(background index, objects largest first: dicts of colour index, mask cropped to box, box)."""
    """RGB image (H, W, 3; uint8 or 0..255 floats) -> {"background": colour, "objects": [...]},
    each object a dict: colour, kind, size, position, area, box (x0, y0, x1, y1 inclusive)."""
    img = np.asarray(img)
    h, w = img.shape[:2]
    labels = palette_labels(img)
    ring = np.concatenate([labels[:2].ravel(), labels[-2:].ravel(), labels[2:-2, :2].ravel(), labels[2:-2, -2:].ravel()])
    bg = Counter(ring.tolist()).most_common(1)[0][0]
    x = img[..., :3].astype(np.float32)
    ring_rgb = np.concatenate([x[:2].reshape(-1, 3), x[-2:].reshape(-1, 3), x[2:-2, :2].reshape(-1, 3),
                               x[2:-2, -2:].reshape(-1, 3)])
    bg_rgb = np.median(ring_rgb[ring == bg], 0)
    scale = min(h, w) / REFERENCE
    objects = []
    for ys, xs in components(labels != bg):
        if len(ys) < MIN_AREA * scale * scale:
            break
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        m = np.zeros((y1 - y0 + 1, x1 - x0 + 1), bool)
        m[ys - y0, xs - x0] = True
        p = np.pad(m, 1)
        interior = m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        iy, ix = np.nonzero(interior) if interior.any() else (ys - y0, xs - x0)
        colour = Counter(labels[iy + y0, ix + x0].tolist()).most_common(1)[0][0]
        # Keep the pixels at least half covered: project each onto the line from the background's
        # colour to the object's (both measured in the image), so that rims do not square a circle.
        obj_rgb = np.median(x[iy + y0, ix + x0], 0)
        axis = obj_rgb - bg_rgb
        alpha = ((x[ys, xs] - bg_rgb) @ axis) / max(float(axis @ axis), 1e-6)
        keep = alpha > 0.5
        if keep.sum() >= MIN_AREA * scale * scale / 2:
            ys, xs = ys[keep], xs[keep]
            y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
            m = np.zeros((y1 - y0 + 1, x1 - x0 + 1), bool)
            m[ys - y0, xs - x0] = True
        extent = max(y1 - y0 + 1, x1 - x0 + 1) / scale
        cx, cy = (x0 + x1 + 1) / 2 / w, (y0 + y1 + 1) / 2 / h
        objects.append({"colour": colour, "mask": m, "box": (int(x0), int(y0), int(x1), int(y1)),
                        "extent": extent, "centre": (cx, cy), "area": int(len(ys))})
    return bg, objects


PROTOTYPES = _prototypes()


def parse_image(img):
    """RGB image (H, W, 3; uint8 or 0..255 floats) -> {"background": colour, "objects": [...]},
    each object a dict: colour, kind, size, position, area, box (x0, y0, x1, y1 inclusive)."""
    bg, objs = _segment(img)
    objects = []
    for o in objs:
        cx, cy = o["centre"]
        position = min(sd.POSITIONS, key=lambda k: (sd.POSITIONS[k][0] - cx) ** 2 + (sd.POSITIONS[k][1] - cy) ** 2)
        objects.append({"colour": PALETTE_NAMES[o["colour"]], "kind": classify_kind(o["mask"]),
                        "size": "large" if o["extent"] > LARGE_EXTENT else "small", "position": position,
                        "area": o["area"], "box": o["box"]})
    return {"background": PALETTE_NAMES[bg], "objects": objects}


def _match_object(obj, want):
    """{group: (matched, stated)} for one stated shape against one parsed object (or None)."""
    out = {}
    for group, key in (("object colour", "colour"), ("shape", "kind"), ("size", "size"), ("position", "position")):
        if want.get(key) is not None:
            out[group] = (int(obj is not None and obj[key] == want[key]), 1)
    return out


def _add(a, b):
    for k, (m, n) in b.items():
        am, an = a.get(k, (0, 0))
        a[k] = (am + m, an + n)
    return a


def match(parsed, spec):
    """{group: (matched, stated)} of one parsed image against one parsed caption (parse_caption)."""
    out = {"background": (int(parsed["background"] == spec["background"]), 1)}
    objs = parsed["objects"]
    wants = spec["shapes"]
    if len(wants) == 1:
        return _add(out, _match_object(objs[0] if objs else None, wants[0]))
    a = objs[0] if len(objs) > 0 else None
    b = objs[1] if len(objs) > 1 else None
    first = _add(_add({}, _match_object(a, wants[0])), _match_object(b, wants[1]))
    second = _add(_add({}, _match_object(b, wants[0])), _match_object(a, wants[1]))
    best = max((first, second), key=lambda d: sum(m for m, _ in d.values()))
    return _add(out, best)


def fraction(counts):
    m = sum(v[0] for v in counts.values())
    n = sum(v[1] for v in counts.values())
    return m / n if n else 0.0


def score(images, captions, distractors=R_PRECISION_DISTRACTORS, seed=0, parsed=None, pool=None):
    """Adherence figures of images against their captions: {group: fraction, "overall", "r_precision",
    "n"}; "colour" combines background and object colours. R-precision draws the other captions from
    pool (default: captions), so a subset of a prompt set can be scored against the whole set."""
    assert len(images) == len(captions) > 0
    specs = [sd.parse_caption(c) for c in captions]
    parsed = parsed or [parse_image(im) for im in images]
    total = {}
    for p, s in zip(parsed, specs):
        _add(total, match(p, s))
    _add(total, {"colour": tuple(a + b for a, b in zip(total["background"], total["object colour"]))})
    report = {g: (total[g][0] / total[g][1] if g in total else float("nan")) for g in GROUPS}
    report["overall"] = fraction({g: total[g] for g in total if g != "colour"})
    pool_specs = specs if pool is None else [sd.parse_caption(c) for c in pool]
    report["r_precision"] = r_precision(parsed, specs, distractors, seed, pool_specs)
    report["n"] = len(images)
    return report


def r_precision(parsed, specs, distractors=R_PRECISION_DISTRACTORS, seed=0, pool=None):
    rng = np.random.default_rng(seed)
    pool = specs if pool is None else pool
    n = len(specs)
    total = 0.0
    for i in range(n):
        others = [j for j in range(len(pool)) if pool[j] != specs[i]]
        if distractors is not None and len(others) > distractors:
            others = list(rng.choice(others, distractors, replace=False))
        own = fraction(match(parsed[i], specs[i]))
        scores = [fraction(match(parsed[i], pool[j])) for j in others]
        if any(s > own for s in scores):
            continue
        total += 1.0 / (1 + sum(s == own for s in scores))
    return total / n


def format_table(rows):
    """rows: list of (name, report) -> a fixed-width table (percentages)."""
    cols = ["colour", "background", "object colour", "shape", "size", "position", "overall", "r_precision"]
    head = f"{'':28s} {'n':>4s} " + " ".join(f"{c[:11]:>11s}" for c in cols)
    lines = [head]
    for name, r in rows:
        lines.append(f"{name[:28]:28s} {r['n']:4d} " + " ".join(f"{100 * r[c]:10.1f}%" for c in cols))
    return "\n".join(lines)


def self_test(verbose=True):
    """Scores ground truth (must be ~100 %), degraded ground truth and two chance baselines on the
    held-out evaluation set. Returns {name: report}; raises AssertionError when ground truth fails."""
    ev = sd.eval_set()
    captions = [c for _, _, c, _ in ev]
    truth = np.stack([sd.render(s, seed) for _, seed, _, s in ev])
    rng = np.random.default_rng(7)
    # Degraded: a 3x3 box blur and Gaussian noise of sigma 12, roughly what a small VAE returns.
    degraded = np.clip(box_blur(truth) + rng.normal(0, 12, truth.shape), 0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, truth.shape, dtype=np.uint8)
    shuffled = captions[1:] + captions[:1]
    # The training-side captions (size/position dropped at random) parse and match too.
    train_images, _, train_captions = sd.training_batch(123, 200)
    results = {
        "ground truth (held-out)": score(truth, captions),
        "ground truth, blur+noise": score(degraded, captions),
        "ground truth (train sample)": score(train_images, train_captions),
        "chance: uniform noise": score(noise, captions),
        "chance: other captions": score(truth, shuffled),
    }
    if verbose:
        print(format_table(list(results.items())))
    gt = results["ground truth (held-out)"]
    for g in GROUPS + ["overall"]:
        assert gt[g] >= 0.98, (g, gt[g])
    # Against every other caption, a two-shape image ties with the caption naming its shapes in the
    # other order ("a green square and a red circle"), which also matches in full: that costs the
    # ground truth a share of its two-shape prompts' R-precision.
    assert gt["r_precision"] >= 0.95, gt["r_precision"]
    assert results["ground truth (train sample)"]["overall"] >= 0.98
    assert results["chance: uniform noise"]["r_precision"] < 0.2
    assert results["chance: other captions"]["r_precision"] < 0.2
    return results


def write_swift_prototypes(path):
    """Writes the prototype descriptors as a Swift source file (Lumen's port of this scorer)."""
    lines = ["// Generated by tools/adherence.py --write-swift-prototypes: do not edit.",
             "// The shape prototypes of the shapes-world scorer: (kind, 7-number descriptor), the descriptors",
             "// of tools/adherence.py's own segmentation of rendered shapes (see that file).",
             "",
             "extension ShapesAdherence {",
             "    static let prototypes: [(kind: String, descriptor: [Float])] = ["]
    for kind, d in PROTOTYPES:
        values = ", ".join(repr(float(v)) for v in d)
        lines.append(f'        ("{kind}", [{values}]),')
    lines += ["    ]", "}", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path} ({len(PROTOTYPES)} prototypes)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--image", help="print the parse of one PNG")
    p.add_argument("--write-swift-prototypes", metavar="FILE",
                   help="write the prototypes for Lumen's Swift scorer (Sources/LumenEval/ShapePrototypes.swift)")
    a = p.parse_args(argv)
    if a.write_swift_prototypes:
        write_swift_prototypes(a.write_swift_prototypes)
        return 0
    if a.image:
        from PIL import Image
        print(parse_image(np.asarray(Image.open(a.image).convert("RGB"))))
    if a.self_test or not a.image:
        self_test()
        print("self-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
