#!/usr/bin/env python3
"""Reference data for Lumen's CLIP tokenizer, schedulers and torch-compatible RNG.

Run by hand (never in CI), with the pinned venv (tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_generation_fixtures.py

Writes Tests/Fixtures/generation/{tokenizer,schedulers,torch_randn}.json. Float32 arrays are stored as
base64 of their little-endian bytes ("b64"), so the tests compare exact bits where they mean to.
torch's float normal kernel depends on the CPU kernel torch dispatches to; the "avx2" values come from
this process (AVX2 or AVX-512 machine: torch uses the same avx_mathfun kernel for both) and the
"scalar" ones from a child process run with ATEN_CPU_CAPABILITY=default.
"""

import base64
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "Fixtures" / "generation"
TOKENIZER_FOLDER = ROOT / "Tests" / "Fixtures" / "tiny-sd" / "tokenizer"


def b64(t) -> str:
    a = np.ascontiguousarray(np.asarray(t, dtype=np.float32).reshape(-1)).astype("<f4")
    return base64.b64encode(a.tobytes()).decode()


def fnv1a64(values: np.ndarray) -> str:
    """FNV-1a over the float32 little-endian bytes (the Swift test computes the same)."""
    h = 0xCBF29CE484222325
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    arr = np.frombuffer(data, dtype=np.uint8)
    for byte in arr.tolist():
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


# --------------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_strings():
    fixed = [
        "", " ", "   ", "\t\n", "a", "A", "hello", "Hello World", "HELLO   WORLD",
        "a photograph of an astronaut riding a horse",
        "A photo of a cat, high quality, 4k, trending on artstation",
        "masterpiece, best quality, (ultra-detailed:1.2), 1girl, solo",
        "don't stop", "it's", "they're", "we've", "I'm", "you'll", "he'd", "DON'T", "IT'S",
        "rock'n'roll", "o'clock", "''s", "'s", "'''", "can't won't shouldn't",
        "3.14159", "1234567890", "2024-01-01", "$100.00", "50%", "#hashtag", "@user", "a+b=c",
        "x^2 + y^2 = z^2", "e=mc²", "¼ ½ ¾", "①②③", "Ⅻ century", "٣ ٤ ٥", "१२३",
        "café", "cafe\u0301", "naïve résumé", "Ångström", "ÉCOLE", "straße", "STRASSE",
        "İstanbul", "ǅemal", "ΣΊΣΥΦΟΣ", "Ὀδυσσεύς", "Привет, мир!", "ПРИВЕТ",
        "こんにちは世界", "東京タワーの夜景", "한국어 텍스트", "中文，标点。", "ｆｕｌｌｗｉｄｔｈ",
        "עברית", "العربية", "हिन्दी", "ไทย", "ქართული",
        "🐱", "a cat 🐱 on a mat", "👍🏽", "👨‍👩‍👧", "🇫🇷 flag", "❤️", "☕ coffee", "✨sparkles✨",
        "emoji🙂inside", "smile :) :-( ;)",
        "<|startoftext|>", "<|endoftext|>", "<|startoftext|>a cat<|endoftext|>",
        "a <|endoftext|> b", "<|STARTOFTEXT|>", "<|startoftext|", "<<|endoftext|>>",
        "x<|endoftext|>y", "<|endoftext|><|endoftext|>",
        "multiple     spaces", "tabs\tand\nnewlines\r\n", "\u00a0non-breaking\u00a0space",
        "ideographic\u3000space", "line\u2028separator", "next\x85line", "zero\u200bwidth",
        "trailing space ", " leading space", "...", "!!!", "?!?!", "---", "___", "***",
        "(parentheses) [brackets] {braces}", "<angle>", "a/b\\c|d", "~`^", "\"quoted\"",
        "“smart quotes”", "‘single’", "em—dash", "en–dash", "ellipsis…", "•bullet",
        "©®™", "°C", "µm", "Ωmega", "ﬁ ligature", "Ⓐ", "𝓯𝓪𝓷𝓬𝔂", "𝟙𝟚𝟛",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "ThIs Is MiXeD cAsE", "snake_case_words", "camelCaseWords", "kebab-case-words",
        "http://example.com/path?query=1&b=2", "user@example.com", "C:\\Windows\\System32",
        "v1.5", "sd-v1-5", "512x512", "8k uhd", "f/1.8", "85mm", "1/250s",
        "\u0301", "a\u0301", "q\u0301", "ǖ", "n\u0303", "\ufeffbom",
    ]
    long_prompts = [
        " ".join(["word"] * 100),
        ", ".join(["highly detailed"] * 40),
        "a " * 80,
        "A very long prompt describing a fantastical landscape with towering mountains, crystal clear "
        "lakes, ancient ruins covered in moss, a dragon soaring through golden clouds at sunset, tiny "
        "villages with glowing lanterns, winding rivers, misty forests, and a lone traveler in a red "
        "cloak walking along a narrow stone path towards a distant castle on a cliff, oil painting, "
        "by Greg Rutkowski and Alphonse Mucha, trending on ArtStation, 8k, masterpiece",
        "x" * 500,
        "🐱" * 60,
        "東京" * 80,
        "1 2 3 4 5 6 7 8 9 0 " * 10,
    ]
    pool = [
        "cat", "Dog", "the", "a", "beautiful", "PAINTING", "of", "sunset", "over", "ocean", "4k",
        "8K", "hdr", "()", "[", "]", ",", ".", "!", "?", "'s", "n't", "café", "東京", "🐶", "ß",
        "Ω", "12", "3.5", "-", "_", ":", ";", "\"", "é", "ñ", "ø", "ł", "ž", "ı", "ς", "Σ",
        "<|endoftext|>", "  ", "\n", "\t", "üher", "ÆØÅ", "ǈ", "ﬃ", "ⅷ", "¹²³",
    ]
    rng = random.Random(20240601)
    generated = []
    for _ in range(220):
        n = rng.randint(1, 12)
        words = [rng.choice(pool) for _ in range(n)]
        seps = [rng.choice(["", " ", " ", " ", "  ", ", "]) for _ in range(n)]
        generated.append("".join(w + s for w, s in zip(words, seps)))
    return fixed + long_prompts + generated


def make_tokenizer_fixture():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER_FOLDER))
    cases = []
    for i, text in enumerate(tokenizer_strings()):
        ids = tok(text)["input_ids"]
        case = {"text": text, "ids": ids}
        if len(ids) > 60 or i < 12:
            case["padded"] = tok(text, padding="max_length", max_length=77, truncation=True)["input_ids"]
        cases.append(case)
    # The file layout transformers 5 writes (tokenizer.json), so the Swift test can write one alike.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        data = json.loads((Path(tmp) / "tokenizer.json").read_text())
        merges = data["model"]["merges"]
        merges_format = "pairs" if isinstance(merges[0], list) else "strings"
        ids_from_json = CLIPTokenizer.from_pretrained(tmp)  # the reload must agree with the folder
        for c in cases[:50]:
            assert ids_from_json(c["text"])["input_ids"] == c["ids"]
    return {
        "transformers": __import__("transformers").__version__,
        "tokenizer_class": type(tok).__name__,
        "tokenizer_json_merges_format": merges_format,
        "tokenizer_json_model_keys": sorted(data["model"].keys()),
        "cases": cases,
    }


# --------------------------------------------------------------------------------------------------
# Torch RNG

SEEDS = [0, 1, 42, 1234, 2**31 - 1, 2**32 + 7, 2**63 + 12345, 2**64 - 1]
SIZES = [1, 2, 5, 15, 16, 17, 31, 32, 33, 100, 1000, 4 * 64 * 64, 2 * 4 * 64 * 64]
SEQUENCE = [5, 3, 20, 1, 16, 7, 2, 40]


def randn_records():
    records = []
    for seed in SEEDS:
        for size in SIZES:
            g = torch.Generator("cpu").manual_seed(seed)
            v = torch.randn(size, generator=g, dtype=torch.float32).numpy()
            rec = {"seed": str(seed), "count": size, "fnv1a64": fnv1a64(v)}
            if size <= 100:
                rec["values"] = b64(v)
            else:
                rec["head"] = b64(v[:16])
                rec["tail"] = b64(v[-16:])
            records.append(rec)
    sequences = []
    for seed in SEEDS[:4]:
        g = torch.Generator("cpu").manual_seed(seed)
        draws = [b64(torch.randn(n, generator=g).numpy()) for n in SEQUENCE]
        sequences.append({"seed": str(seed), "counts": SEQUENCE, "values": draws})
    return {"capability": torch.backends.cpu.get_cpu_capability(), "randn": records, "sequences": sequences}


def make_rng_fixture():
    from diffusers.utils.torch_utils import randn_tensor

    # diffusers' randn_tensor with one generator is one torch.randn over the whole batch shape.
    a = randn_tensor((2, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(3), dtype=torch.float32)
    b = torch.randn(2 * 4 * 8 * 8, generator=torch.Generator("cpu").manual_seed(3))
    assert torch.equal(a.reshape(-1), b)

    cap = torch.backends.cpu.get_cpu_capability()
    assert cap in ("AVX2", "AVX512"), f"run this on an x86-64 machine with AVX2 (got {cap})"
    main = randn_records()
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    child = subprocess.run([sys.executable, __file__, "--randn-only"], env=env, check=True,
                           capture_output=True, text=True)
    scalar = json.loads(child.stdout)
    assert scalar["capability"] == "DEFAULT", scalar["capability"]
    g = torch.Generator("cpu").manual_seed(7)
    rand = torch.rand(40, generator=g).numpy()
    return {
        "torch": torch.__version__,
        "avx2": main,
        "scalar": scalar,
        "rand": {"seed": "7", "values": b64(rand)},
    }


# --------------------------------------------------------------------------------------------------
# Schedulers

SD_BASE = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, set_alpha_to_one=False, clip_sample=False,
)
SHAPE = (1, 4, 2, 4)


def scheduler_classes():
    from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                           EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler,
                           PNDMScheduler)
    return {
        "ddim": DDIMScheduler, "pndm": PNDMScheduler, "euler": EulerDiscreteScheduler,
        "euler-a": EulerAncestralDiscreteScheduler, "dpmpp-2m": DPMSolverMultistepScheduler,
        "dpmpp-2m-karras": DPMSolverMultistepScheduler, "lcm": LCMScheduler, "ddpm": DDPMScheduler,
    }


def fake_model(sample, t, base):
    """Any deterministic function will do: the test replays the recorded outputs."""
    return 0.6 * torch.sin(sample + float(t) / 250.0) + 0.3 * base


def run_trajectory(kind, config, steps, seed):
    cls = scheduler_classes()[kind]
    sched = cls.from_config(config)
    sched.set_timesteps(steps)
    g = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn(SHAPE, generator=g) * sched.init_noise_sigma
    base = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(seed + 1000))
    noise_gen = torch.Generator("cpu").manual_seed(seed + 2000)
    rec = {
        "kind": kind, "config": config, "steps": steps, "noise_seed": seed + 2000,
        "timesteps": [float(t) for t in sched.timesteps],
        "init_noise_sigma": float(sched.init_noise_sigma),
        "initial": b64(latents),
        "trajectory": [],
    }
    if hasattr(sched, "sigmas") and kind not in ("ddim", "pndm", "lcm", "ddpm"):
        rec["sigmas"] = [float(s) for s in sched.sigmas]
    for i, t in enumerate(sched.timesteps):
        model_input = sched.scale_model_input(latents, t)
        out = fake_model(latents, t, base)
        state = noise_gen.get_state()
        # The noise the step will draw, drawn the same way from a copy of the generator.
        probe = torch.Generator("cpu")
        probe.set_state(state)
        noise = torch.randn(SHAPE, generator=probe)
        before = noise_gen.get_state()
        kwargs = {"generator": noise_gen} if kind in ("euler-a", "lcm", "ddpm") else {}
        result = sched.step(out, t, latents, **kwargs)
        used_noise = not torch.equal(before, noise_gen.get_state())
        step = {"model_output": b64(out), "sample": b64(result.prev_sample)}
        if used_noise:
            step["noise"] = b64(noise)
        if i in (0, len(sched.timesteps) - 1):
            step["model_input"] = b64(model_input)
        if kind == "lcm":
            step["denoised"] = b64(result.denoised)
        rec["trajectory"].append(step)
        latents = result.prev_sample
    return rec


def img2img_record(kind, config, steps, strength, seed):
    cls = scheduler_classes()[kind]
    sched = cls.from_config(config)
    sched.set_timesteps(steps)
    # diffusers' StableDiffusionImg2ImgPipeline.get_timesteps.
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = sched.timesteps[t_start * sched.order:]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(t_start * sched.order)
    init = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(seed))
    noise = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(seed + 1))
    noisy = sched.add_noise(init, noise, timesteps[:1])
    return {
        "kind": kind, "config": config, "steps": steps, "strength": strength,
        "first_step": t_start * sched.order, "timesteps": [float(t) for t in timesteps],
        "original": b64(init), "noise": b64(noise), "noisy": b64(noisy),
    }


def make_scheduler_fixture():
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    records = []
    seed = 100
    kinds = ["ddim", "pndm", "euler", "euler-a", "dpmpp-2m", "dpmpp-2m-karras", "ddpm"]
    for kind in kinds:
        for spacing in ["leading", "trailing", "linspace"]:
            for prediction in ["epsilon", "v_prediction"]:
                config = dict(SD_BASE, timestep_spacing=spacing, prediction_type=prediction)
                if kind == "pndm":
                    config["skip_prk_steps"] = True
                if kind == "dpmpp-2m-karras":
                    config["use_karras_sigmas"] = True
                records.append(run_trajectory(kind, config, 10, seed))
                seed += 1
    for prediction in ["epsilon", "v_prediction"]:
        for steps in (4, 8):
            config = dict(SD_BASE, prediction_type=prediction)
            records.append(run_trajectory("lcm", config, steps, seed))
            seed += 1
    # Longer runs and other schedules.
    records.append(run_trajectory("dpmpp-2m-karras", dict(SD_BASE, use_karras_sigmas=True), 25, seed)); seed += 1
    records.append(run_trajectory("dpmpp-2m", dict(SD_BASE, timestep_spacing="linspace"), 25, seed)); seed += 1
    records.append(run_trajectory("euler", dict(SD_BASE, use_karras_sigmas=True, timestep_spacing="leading"), 12, seed)); seed += 1
    records.append(run_trajectory("euler", dict(SD_BASE, use_karras_sigmas=True, timestep_spacing="linspace"), 12, seed)); seed += 1
    records.append(run_trajectory("pndm", dict(SD_BASE, skip_prk_steps=True), 25, seed)); seed += 1
    linear = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    for kind in ["ddpm", "ddim", "euler", "euler-a"]:
        records.append(run_trajectory(kind, dict(linear), 10, seed)); seed += 1
    # Only the betas given: each class's own defaults (DDIM: clip_sample and set_alpha_to_one true…).
    only_betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    for kind in ["ddim", "euler", "euler-a", "dpmpp-2m", "ddpm"]:
        records.append(run_trajectory(kind, dict(only_betas), 10, seed)); seed += 1
    # Other training lengths and offsets.
    records.append(run_trajectory("euler", dict(SD_BASE, num_train_timesteps=500, timestep_spacing="trailing"), 7, seed)); seed += 1
    records.append(run_trajectory("ddim", dict(SD_BASE, steps_offset=0, timestep_spacing="leading"), 7, seed)); seed += 1

    img2img = []
    for kind in ["ddim", "pndm", "euler", "euler-a", "dpmpp-2m", "dpmpp-2m-karras", "ddpm", "lcm"]:
        config = dict(SD_BASE)
        if kind == "pndm":
            config["skip_prk_steps"] = True
        if kind == "dpmpp-2m-karras":
            config["use_karras_sigmas"] = True
        img2img.append(img2img_record(kind, config, 10, 0.6, seed)); seed += 1
    img2img.append(img2img_record("euler", dict(SD_BASE), 50, 0.8, seed)); seed += 1

    schedule = {}
    for name, cfg in {"scaled_linear": SD_BASE, "linear": linear}.items():
        s = DDIMScheduler.from_config(cfg)
        schedule[name] = {"config": cfg, "alphas_cumprod": b64(s.alphas_cumprod), "betas": b64(s.betas)}
    import diffusers
    return {"diffusers": diffusers.__version__, "shape": list(SHAPE), "schedules": schedule,
            "trajectories": records, "img2img": img2img}


def main():
    if "--randn-only" in sys.argv:
        print(json.dumps(randn_records()))
        return
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in [("tokenizer", make_tokenizer_fixture), ("torch_randn", make_rng_fixture),
                       ("schedulers", make_scheduler_fixture)]:
        data = make()
        path = OUT / f"{name}.json"
        # ASCII escapes: Foundation's JSONSerialization drops a raw U+FEFF at the start of a string.
        path.write_text(json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
