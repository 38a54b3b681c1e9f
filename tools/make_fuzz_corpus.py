#!/usr/bin/env python3
"""Writes the seed corpus of FuzzTests (Tests/Fixtures/fuzz/): a few small valid safetensors files,
the tiny model's JSON configs and small PNGs of several colour types with text chunks. Standard
library only, deterministic: a re-run writes the same bytes. Run from the repository root."""
import json
import os
import shutil
import struct
import zlib

ROOT = os.path.join("Tests", "Fixtures", "fuzz")


def safetensors(path, tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png(path, width, height, depth, colour, rows, extra=()):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    body = chunk(b"IHDR", ihdr) + b"".join(chunk(k, v) for k, v in extra)
    body += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + body)


def main():
    for sub in ("safetensors", "config", "png"):
        os.makedirs(os.path.join(ROOT, sub), exist_ok=True)
    st = os.path.join(ROOT, "safetensors")
    safetensors(os.path.join(st, "f16-pair.safetensors"), {
        "a.weight": ("F16", [2, 3], struct.pack("<6e", 0.5, -1, 2, 0, 1.5, -0.25)),
        "a.bias": ("F16", [3], struct.pack("<3e", 1, 2, 3)),
    }, {"format": "pt"})
    safetensors(os.path.join(st, "mixed.safetensors"), {
        "ids": ("I64", [1, 4], struct.pack("<4q", 0, 1, 2, 3)),
        "mask": ("U8", [4], bytes([1, 0, 1, 1])),
        "w": ("BF16", [2, 2], struct.pack("<4H", 0x3F80, 0xBF80, 0x4000, 0)),
        "s": ("F32", [], struct.pack("<f", 3.0)),
        "z": ("F32", [0, 4], b""),
    })
    safetensors(os.path.join(st, "empty.safetensors"), {})
    tiny = os.path.join("Tests", "Fixtures", "tiny-sd")
    for name, source in [("unet.json", "unet/config.json"), ("vae.json", "vae/config.json"),
                         ("text_encoder.json", "text_encoder/config.json"), ("scheduler.json", "scheduler/scheduler_config.json")]:
        shutil.copyfile(os.path.join(tiny, source), os.path.join(ROOT, "config", name))
    p = os.path.join(ROOT, "png")
    png(os.path.join(p, "rgb8-text.png"), 4, 3, 8, 2, [bytes(range(y * 12, y * 12 + 12)) for y in range(3)],
        [(b"tEXt", b"parameters\0a red circle\nSteps: 3")])
    png(os.path.join(p, "grey1.png"), 10, 2, 1, 0, [b"\xa5\x40", b"\x5a\x80"])
    png(os.path.join(p, "palette-trns.png"), 3, 2, 8, 3, [b"\0\1\2", b"\2\1\0"],
        [(b"PLTE", b"\xff\0\0\0\xff\0\0\0\xff"), (b"tRNS", b"\x80")])
    png(os.path.join(p, "rgba16-itxt.png"), 2, 2, 16, 6, [bytes(range(16)), bytes(range(16, 32))],
        [(b"iTXt", b"parameters\0\0\0\0\0" + "猫 🐱".encode())])
    png(os.path.join(p, "greyalpha8-ztxt.png"), 2, 1, 8, 4, [b"\x10\xff\x20\x80"],
        [(b"zTXt", b"comment\0\0" + zlib.compress(b"hello"))])


if __name__ == "__main__":
    main()
