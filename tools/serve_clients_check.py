#!/usr/bin/env python3
"""`lumen serve` against the clients people use: the official `openai` Python client and a plain
`requests` AUTOMATIC1111 script (pinned in tools/requirements-serve.txt; .ci/run installs them in a
venv). Each image must equal, pixel for pixel, what `lumen generate` writes for the same seed and
settings. Loopback only; the server is started and stopped here.

    python tools/serve_clients_check.py [path/to/lumen]
"""
import base64
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

import openai
import requests

LUMEN = sys.argv[1] if len(sys.argv) > 1 else ".build/release/lumen"
KEY = "ci-check-key"


def png_pixels(data: bytes):
    """(width, height, RGB bytes) of an 8-bit RGB, non-interlaced PNG (what Lumen writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (8, 2, 0), "expected 8-bit RGB, not interlaced"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, out, prev = zlib.decompress(idat), width * 3, bytearray(), bytearray(width * 3)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b, c = prev[i], (prev[i - 3] if i >= 3 else 0)
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return width, height, bytes(out)


def write_png(path, width, height, pixels, channels):
    """An 8-bit RGB (channels 3) or RGBA (channels 4) PNG, unfiltered rows."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    stride = width * channels
    raw = b"".join(b"\0" + bytes(pixels[y * stride:(y + 1) * stride]) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if channels == 3 else 6, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def lumen_generate(tmp, name, prompt, seed, steps, guidance, scheduler, negative=None, extra=()):
    path = os.path.join(tmp, name + ".png")
    cmd = [LUMEN, "generate", prompt, "--seed", str(seed), "--steps", str(steps), "--guidance", str(guidance),
           "--width", "64", "--height", "64", "--scheduler", scheduler, "--backend", "cpu", "-o", path, *extra]
    if negative is not None:
        cmd += ["--negative-prompt", negative]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(path, "rb") as f:
        return png_pixels(f.read())


def main():
    server = subprocess.Popen([LUMEN, "serve", "--port", "0", "--api-key", KEY, "--backend", "cpu", "--model-memory", "4G"],
                              stderr=subprocess.PIPE, text=True)
    failures = 1  # until the checks have run
    try:
        m, seen = None, []
        while not m:
            line = server.stderr.readline()
            assert line, f"the server did not say its port: {''.join(seen)!r}"
            seen.append(line)
            m = re.search(r"lumen: serving .* on http://127\.0\.0\.1:(\d+)/", line)
        base = f"http://127.0.0.1:{m.group(1)}"
        failures = 0
        with tempfile.TemporaryDirectory() as tmp:
            # The official OpenAI client; Lumen's extra fields go in extra_body.
            client = openai.OpenAI(base_url=base + "/v1", api_key=KEY)
            assert [m.id for m in client.models.list()] == ["demo"]
            result = client.images.generate(model="demo", prompt="a red circle on a blue background", n=1, size="64x64",
                                            response_format="b64_json",
                                            extra_body={"seed": 42, "steps": 8, "guidance": 4.0, "scheduler": "euler-a"})
            got = png_pixels(base64.b64decode(result.data[0].b64_json))
            want = lumen_generate(tmp, "openai", "a red circle on a blue background", 42, 8, 4.0, "euler-a")
            print("openai client:", "same pixels" if got == want else "DIFFERENT pixels")
            failures += got != want
            try:
                openai.OpenAI(base_url=base + "/v1", api_key="wrong").models.list()
                print("openai client: a wrong key was accepted")
                failures += 1
            except openai.AuthenticationError:
                pass

            # images.edit: image-to-image without a mask, inpainting with OpenAI's transparent mask,
            # each equal to lumen generate with --init-image (and --mask, white = repaint).
            init = os.path.join(tmp, "openai.png")
            for masked in (False, True):
                kwargs = {}
                extra = ["--init-image", init, "--strength", "0.7" if not masked else "1"]
                if masked:
                    rgba, white = bytearray(), bytearray()
                    for y in range(64):
                        for x in range(64):
                            edit = 16 <= x < 48 and 8 <= y < 40  # a transparent rectangle: repaint it
                            rgba += bytes((0, 0, 0, 0 if edit else 255))
                            white += bytes((255, 255, 255) if edit else (0, 0, 0))
                    write_png(os.path.join(tmp, "mask-rgba.png"), 64, 64, rgba, 4)
                    write_png(os.path.join(tmp, "mask-white.png"), 64, 64, white, 3)
                    kwargs["mask"] = open(os.path.join(tmp, "mask-rgba.png"), "rb")
                    extra += ["--mask", os.path.join(tmp, "mask-white.png")]
                with open(init, "rb") as image:
                    result = client.images.edit(model="demo", image=image, prompt="a yellow triangle", n=1, size="64x64",
                                                response_format="b64_json", **kwargs,
                                                extra_body={"seed": 9, "steps": 6, "guidance": 5.0, "scheduler": "ddim",
                                                            "strength": 1.0 if masked else 0.7})
                if masked:
                    kwargs["mask"].close()
                got = png_pixels(base64.b64decode(result.data[0].b64_json))
                want = lumen_generate(tmp, "edit-%d" % masked, "a yellow triangle", 9, 6, 5.0, "ddim", extra=extra)
                label = "openai images.edit with a mask (inpainting):" if masked else "openai images.edit (image-to-image):"
                print(label, "same pixels" if got == want else "DIFFERENT pixels")
                failures += got != want

            # A plain requests script, as A1111 scripts are written.
            r = requests.post(base + "/sdapi/v1/txt2img", headers={"Authorization": f"Bearer {KEY}"}, timeout=300, json={
                "prompt": "a green square on a white background", "negative_prompt": "", "steps": 7, "cfg_scale": 5,
                "width": 64, "height": 64, "seed": 7, "sampler_name": "DPM++ 2M Karras", "batch_size": 1, "n_iter": 1})
            r.raise_for_status()
            body = r.json()
            got = png_pixels(base64.b64decode(body["images"][0]))
            want = lumen_generate(tmp, "a1111", "a green square on a white background", 7, 7, 5, "dpmpp-2m-karras", negative="")
            print("A1111 requests script:", "same pixels" if got == want else "DIFFERENT pixels")
            failures += got != want

            # A1111's masked img2img from that image: its mask fields are lumen generate's --mask,
            # --mask-blur and --mask-crop ("Only masked" with its padding).
            white = bytearray()
            for y in range(64):
                for x in range(64):
                    white += bytes((255, 255, 255) if 8 <= x < 32 and 24 <= y < 56 else (0, 0, 0))
            write_png(os.path.join(tmp, "a1111-mask.png"), 64, 64, white, 3)
            with open(os.path.join(tmp, "a1111-mask.png"), "rb") as f:
                mask_b64 = base64.b64encode(f.read()).decode()
            r = requests.post(base + "/sdapi/v1/img2img", headers={"Authorization": f"Bearer {KEY}"}, timeout=300, json={
                "init_images": [body["images"][0]], "mask": mask_b64, "mask_blur": 2, "inpainting_fill": 1,
                "inpaint_full_res": True, "inpaint_full_res_padding": 8, "inpainting_mask_invert": 0,
                "prompt": "a red circle", "steps": 6, "cfg_scale": 4, "seed": 3, "denoising_strength": 0.8, "sampler_name": "DDIM"})
            r.raise_for_status()
            got = png_pixels(base64.b64decode(r.json()["images"][0]))
            want = lumen_generate(tmp, "a1111-inpaint", "a red circle", 3, 6, 4, "ddim", negative="", extra=[
                "--init-image", os.path.join(tmp, "a1111.png"), "--strength", "0.8", "--mask", os.path.join(tmp, "a1111-mask.png"),
                "--mask-blur", "2", "--mask-crop", "8"])
            print("A1111 requests script, masked img2img:", "same pixels" if got == want else "DIFFERENT pixels")
            failures += got != want
    finally:
        server.terminate()
        rc = server.wait(timeout=60)
        print("server exit status after SIGTERM:", rc)
        if rc != 0:
            failures = 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
