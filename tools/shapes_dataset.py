#!/usr/bin/env python3
"""Procedural captioned images for Lumen's demo model (issue 6): one or two flat shapes on a flat
background, where whether an image follows its caption can be checked by counting pixels
(tools/adherence.py).

Run by hand, never in CI (numpy only; Pillow for the preview). From the repository root:

    .venv-fixtures/bin/python tools/shapes_dataset.py                    # split statistics, < 1 s
    .venv-fixtures/bin/python tools/shapes_dataset.py --preview /tmp/shapes.png --count 64   # ~1 s

The world
  colours    red green blue yellow purple orange white black (well apart in RGB, so a pixel's
             nearest palette colour is unambiguous; every token is one CLIP token)
  kinds      circle square triangle (apex up) cross (a plus sign, arms a third of its extent)
  sizes      small (16 px extent at 64x64) and large (30 px); +-8 % jitter
  positions  top left, top right, bottom left, bottom right (centres at a quarter / three quarters
             of the image) and center; +-3 px jitter
  background any palette colour other than the shapes' colours

Captions
  one shape  "a small red circle at the top left on a blue background"
             "a large red circle in the center on a blue background"
             ("an" before orange: "an orange square at the bottom right on a white background")
  two shapes "a red circle and a green square on a white background" (both 22 px, the first named
             on the left half, the second on the right, vertical jitter +-8 px; different colours)
  In training, a one-shape caption drops its size and/or its position with probability 0.25 each
  ("a red circle on a blue background" is the README's prompt); evaluation captions are complete.

The held-out split (fixed, SPLIT_SEED): every complete attribute combination is enumerated,
  one shape:  size x colour x kind x position x background  = 2 * 8 * 4 * 5 * 7 = 2240
  two shapes: colour1 x kind1 x colour2 x kind2 x background = 8 * 4 * 7 * 4 * 6 = 5376
and a seeded shuffle puts 10 % of each list (224 and 538 combinations) in the held-out set. Training
scenes are drawn only from the other 90 %, so no held-out combination is ever rendered or captioned
in training (a training caption with its size or position dropped may still equal a held-out
caption with those words dropped; evaluation captions always carry every attribute, so none of
them ever occurs in training). The evaluation set is all 224 held-out one-shape combinations and
the first 100 held-out two-shape ones: 324 prompts, each with a fixed seed.

Rendering is 4x4 supersampled (anti-aliased edges, as the VAE will produce), colours jittered by
+-10 per channel. Everything is a pure function of the seed given.
"""

import argparse
import itertools
import random
import re
import sys
from dataclasses import dataclass, field

import numpy as np

PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 40, 180),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS = list(PALETTE)
KINDS = ["circle", "square", "triangle", "cross"]
SIZES = {"small": 16.0, "large": 30.0}            # extent in pixels at 64x64
PAIR_EXTENT = 22.0
POSITIONS = {                                      # centre as a fraction of (width, height)
    "top left": (0.25, 0.25), "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
IMAGE_SIZE = 64
SPLIT_SEED = 20240606
HELD_OUT_FRACTION = 0.10
EVAL_PAIRS = 100
PAIR_FRACTION = 0.4                                 # of training scenes with two shapes
DROP_SIZE, DROP_POSITION = 0.25, 0.25


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    size: str = ""          # "small" / "large"; "" for the two-shape scenes' fixed extent
    position: str = ""      # a POSITIONS key; "" for two-shape scenes


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple           # one or two Shape

    def key(self):
        """The complete attribute combination (what the held-out split is over)."""
        if len(self.shapes) == 1:
            s = self.shapes[0]
            return ("one", s.size, s.colour, s.kind, s.position, self.background)
        a, b = self.shapes
        return ("two", a.colour, a.kind, b.colour, b.kind, self.background)


@dataclass
class Layout:
    """Where a scene's shapes land in pixels (jittered), and the exact colours used."""
    background_rgb: tuple
    items: list = field(default_factory=list)   # (Shape, cx, cy, extent, rgb)


# ------------------------------------------------------------------------------------------
# Captions

def article(word):
    return "an" if word[0] in "aeiou" else "a"


def position_phrase(position):
    return "in the center" if position == "center" else f"at the {position}"


def caption(scene, drop_size=False, drop_position=False):
    if len(scene.shapes) == 1:
        s = scene.shapes[0]
        words = ([] if drop_size else [s.size]) + [s.colour, s.kind]
        if not drop_position:
            words.append(position_phrase(s.position))
        return f"{article(words[0])} {' '.join(words)} on {article(scene.background)} {scene.background} background"
    a, b = scene.shapes
    return (f"{article(a.colour)} {a.colour} {a.kind} and {article(b.colour)} {b.colour} {b.kind} "
            f"on {article(scene.background)} {scene.background} background")


_ONE = re.compile(r"^an? (?:(small|large) )?(\w+) (\w+)(?: (?:at the (top left|top right|bottom left|bottom right)"
                  r"|in the (center)))? on an? (\w+) background$")
_TWO = re.compile(r"^an? (\w+) (\w+) and an? (\w+) (\w+) on an? (\w+) background$")


def parse_caption(text):
    """Caption -> dict of the attributes it states (None where it leaves one out), or raises
    ValueError for text that is not in this world's grammar."""
    t = " ".join(text.lower().strip().rstrip(".").split())
    m = _ONE.match(t)
    if m and m.group(2) in PALETTE and m.group(3) in KINDS and m.group(6) in PALETTE:
        return {"background": m.group(6),
                "shapes": [{"colour": m.group(2), "kind": m.group(3), "size": m.group(1),
                            "position": m.group(4) or m.group(5)}]}
    m = _TWO.match(t)
    if m and m.group(1) in PALETTE and m.group(3) in PALETTE and m.group(5) in PALETTE \
            and m.group(2) in KINDS and m.group(4) in KINDS:
        return {"background": m.group(5),
                "shapes": [{"colour": m.group(1), "kind": m.group(2), "size": None, "position": None},
                           {"colour": m.group(3), "kind": m.group(4), "size": None, "position": None}]}
    raise ValueError(f"not a caption of the shapes world: {text!r}")


# ------------------------------------------------------------------------------------------
# The split

def all_scenes():
    ones = [Scene(bg, (Shape(c, k, s, p),))
            for s in SIZES for c in COLOURS for k in KINDS for p in POSITIONS for bg in COLOURS if bg != c]
    twos = [Scene(bg, (Shape(c1, k1), Shape(c2, k2)))
            for c1 in COLOURS for k1 in KINDS for c2 in COLOURS if c2 != c1 for k2 in KINDS
            for bg in COLOURS if bg not in (c1, c2)]
    return ones, twos


_SPLIT = None


def split():
    """{"train": (ones, twos), "held_out": (ones, twos)}: lists of Scene, fixed by SPLIT_SEED."""
    global _SPLIT
    if _SPLIT is None:
        rng = random.Random(SPLIT_SEED)
        parts = {"train": [], "held_out": []}
        for scenes in all_scenes():
            order = list(scenes)
            rng.shuffle(order)
            n = round(len(order) * HELD_OUT_FRACTION)
            parts["held_out"].append(order[:n])
            parts["train"].append(order[n:])
        _SPLIT = {k: tuple(v) for k, v in parts.items()}
        held = {s.key() for part in _SPLIT["held_out"] for s in part}
        assert not held & {s.key() for part in _SPLIT["train"] for s in part}
    return _SPLIT


def eval_set(pairs=EVAL_PAIRS):
    """The fixed held-out evaluation prompts: list of (index, seed, caption, Scene)."""
    ones, twos = split()["held_out"]
    scenes = list(ones) + list(twos[:pairs])
    return [(i, 1000 + i, caption(s), s) for i, s in enumerate(scenes)]


# ------------------------------------------------------------------------------------------
# Sampling and rendering

def sample_scene(rng, part="train"):
    """A random scene of the given split part, drawn with numpy Generator rng."""
    ones, twos = split()[part]
    pool = twos if rng.random() < PAIR_FRACTION else ones
    return pool[int(rng.integers(len(pool)))]


def sample_caption(scene, rng):
    """A training caption: one-shape captions drop size / position now and then."""
    if len(scene.shapes) == 2:
        return caption(scene)
    return caption(scene, drop_size=rng.random() < DROP_SIZE, drop_position=rng.random() < DROP_POSITION)


def _jitter_rgb(rgb, rng, amount):
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in rgb)


def layout(scene, rng, size=IMAGE_SIZE):
    """Draws the jitter of a scene: centres, extents, colours."""
    f = size / IMAGE_SIZE
    out = Layout(_jitter_rgb(PALETTE[scene.background], rng, 8))
    if len(scene.shapes) == 1:
        s = scene.shapes[0]
        fx, fy = POSITIONS[s.position]
        extent = SIZES[s.size] * f * rng.uniform(0.92, 1.08)
        cx = fx * size + rng.uniform(-3, 3) * f
        cy = fy * size + rng.uniform(-3, 3) * f
        lo, hi = extent / 2 + f, size - extent / 2 - f      # a large shape stays whole in a corner
        cx, cy = min(max(cx, lo), hi), min(max(cy, lo), hi)
        out.items.append((s, cx, cy, extent, _jitter_rgb(PALETTE[s.colour], rng, 10)))
    else:
        for s, fx in zip(scene.shapes, (0.265, 0.735)):
            extent = PAIR_EXTENT * f * rng.uniform(0.92, 1.08)
            cx = fx * size + rng.uniform(-2, 2) * f
            cy = 0.5 * size + rng.uniform(-8, 8) * f
            out.items.append((s, cx, cy, extent, _jitter_rgb(PALETTE[s.colour], rng, 10)))
    return out


def shape_mask(kind, x, y, cx, cy, extent):
    """Boolean inside-test at points (x, y) for a shape of the given extent centred at (cx, cy)."""
    h = extent / 2
    dx, dy = x - cx, y - cy
    if kind == "circle":
        return dx * dx + dy * dy <= h * h
    if kind == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if kind == "triangle":       # apex at the top centre, base along the bottom
        return (dy <= h) & (np.abs(dx) <= (dy + h) / 2)
    if kind == "cross":
        a = extent / 6
        return ((np.abs(dx) <= a) & (np.abs(dy) <= h)) | ((np.abs(dy) <= a) & (np.abs(dx) <= h))
    raise ValueError(kind)


_GRIDS = {}


def render_layout(lay, size=IMAGE_SIZE, supersample=4):
    """uint8 [size, size, 3]: the background, then each shape blended by its pixel coverage."""
    if size not in _GRIDS:
        t = (np.arange(size * supersample) + 0.5) / supersample
        _GRIDS[size] = np.meshgrid(t, t)
    x, y = _GRIDS[size]
    img = np.empty((size, size, 3), np.float32)
    img[:] = lay.background_rgb
    for s, cx, cy, extent, rgb in lay.items:
        m = shape_mask(s.kind, x, y, cx, cy, extent).astype(np.float32)
        cov = m.reshape(size, supersample, size, supersample).mean(axis=(1, 3))[..., None]
        img = img * (1 - cov) + np.asarray(rgb, np.float32) * cov
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(scene, seed, size=IMAGE_SIZE):
    """The scene's image for a given seed (the seed fixes the jitter)."""
    return render_layout(layout(scene, np.random.default_rng(seed), size), size)


def training_batch(seed, n, size=IMAGE_SIZE):
    """n training images (uint8 [n, size, size, 3]), their scenes and one caption each, fixed by seed."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    images = np.stack([render_layout(layout(s, rng, size), size) for s in scenes])
    captions = [sample_caption(s, rng) for s in scenes]
    return images, scenes, captions


def grid(images, columns=8):
    n, h, w, c = images.shape
    rows = (n + columns - 1) // columns
    out = np.full((rows * (h + 2), columns * (w + 2), c), 128, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, columns)
        out[r * (h + 2) + 1:r * (h + 2) + 1 + h, q * (w + 2) + 1:q * (w + 2) + 1 + w] = im
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preview", help="write a grid of training images to this PNG, captions to stdout")
    p.add_argument("--held-out", action="store_true", help="preview the evaluation set instead")
    p.add_argument("--count", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    sp = split()
    print(f"one-shape combinations: {len(sp['train'][0])} train, {len(sp['held_out'][0])} held out")
    print(f"two-shape combinations: {len(sp['train'][1])} train, {len(sp['held_out'][1])} held out")
    ev = eval_set()
    print(f"evaluation prompts: {len(ev)} (first: {ev[0][2]!r}, seed {ev[0][1]})")
    vocab = set(" ".join(c for _, _, c, _ in ev).split())
    print(f"words used: {len(vocab)}")
    if a.preview:
        from PIL import Image
        if a.held_out:
            items = ev[:a.count]
            images = np.stack([render(s, seed) for _, seed, _, s in items])
            captions = [c for _, _, c, _ in items]
        else:
            images, _, captions = training_batch(a.seed, a.count)
        Image.fromarray(grid(images)).save(a.preview)
        for i, c in enumerate(captions):
            print(f"{i:3d}  {c}")
        print("wrote", a.preview)
    return 0


if __name__ == "__main__":
    sys.exit(main())
