#!/usr/bin/env python3
"""PyTorch/diffusers on the CPU at the phases `lumen-bench model` times, and the two side by side.

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/bench_torch.py --compare .build/release/lumen-bench

builds SD 1.5's text encoder, UNet and VAE from their configs (Tests/Fixtures/sd15-configs) with
random fp32 weights, times each phase (median of --runs after a warm-up, torch.inference_mode, the
same thread count as Lumen), measures a whole 512x512 generation (--steps steps, Euler, guidance
7.5) and its peak RSS in a child process, and with --compare runs `lumen-bench model --json` in
the same invocation and prints both with Lumen/PyTorch ratios. Pinned versions:
tools/requirements-fixtures.txt.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "..", "Tests", "Fixtures", "sd15-configs")


def build(threads):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(CONFIGS, "unet"))).eval()
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(CONFIGS, "vae"))).eval()
    with open(os.path.join(CONFIGS, "text_encoder", "config.json")) as f:
        text = CLIPTextModel(CLIPTextConfig(**json.load(f))).eval()
    return torch, text, unet, vae


def timed(torch, fn, runs):
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def phases(threads, runs):
    torch, text, unet, vae = build(threads)
    ids = torch.full((2, 77), 49407, dtype=torch.long)
    ids[:, 0] = 49406
    ids[:, 1:9] = torch.arange(321, 329)
    results = [{"phase": "text-encode", "seconds": timed(torch, lambda: text(ids), runs)}]
    ctx = torch.randn(2, 77, 768)
    for phase, size in (("unet-step-512", 64), ("unet-step-256", 32)):
        x = torch.randn(2, 4, size, size)
        t = torch.tensor([981.0, 981.0])
        results.append({"phase": phase, "seconds": timed(torch, lambda: unet(x, t, ctx), runs)})
    z = torch.randn(1, 4, 64, 64)
    results.append({"phase": "vae-decode-512", "seconds": timed(torch, lambda: vae.decode(z), runs)})
    return results


def generate_child(threads, steps):
    torch, text, unet, vae = build(threads)
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(os.path.join(HERE, "..", "Tests", "Fixtures", "tiny-sd", "tokenizer"))
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        pipe("a benchmark prompt", num_inference_steps=steps, guidance_scale=7.5, height=512, width=512,
             generator=torch.Generator("cpu").manual_seed(0), output_type="np")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--compare", metavar="LUMEN_BENCH", help="also run `LUMEN_BENCH model --json` and print ratios")
    ap.add_argument("--generate-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_child:
        generate_child(args.threads, args.steps)
        return

    lumen = None
    if args.compare:
        out = subprocess.run([args.compare, "model", "--json", "--runs", str(args.runs), "--steps", str(args.steps)],
                             check=True, capture_output=True, text=True)
        lumen = {r["phase"]: r for r in json.loads(out.stdout)}

    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--generate-child", "--threads", str(args.threads),
                              "--steps", str(args.steps)])
    # wait4 on this one child: RUSAGE_CHILDREN would also count the lumen-bench run above.
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, child.args)
    gen_seconds = time.perf_counter() - t0
    rss = usage.ru_maxrss * 1024
    torch_results = {r["phase"]: r for r in phases(args.threads, args.runs)}
    torch_results["generate-512"] = {"phase": "generate-512", "seconds": gen_seconds, "peak_rss_bytes": rss}

    if lumen is None:
        print(json.dumps(list(torch_results.values()), indent=1))
        return
    print(f"{'phase':<16}{'PyTorch s':>11}{'Lumen s':>10}{'Lumen/PyTorch':>15}   notes")
    for phase in ("text-encode", "unet-step-512", "unet-step-256", "vae-decode-512", "generate-512"):
        p, l = torch_results.get(phase), lumen.get(phase)
        if not p or not l:
            continue
        notes = ""
        if phase == "generate-512":
            notes = (f"{args.steps} steps; peak RSS PyTorch {p['peak_rss_bytes'] / 1e9:.2f} GB, "
                     f"Lumen {l['peak_rss_bytes'] / 1e9:.2f} GB")
        elif l.get("gflops"):
            notes = f"Lumen {l['gflops']:.0f} GFLOP/s"
        print(f"{phase:<16}{p['seconds']:>11.3f}{l['seconds']:>10.3f}{l['seconds'] / p['seconds']:>15.2f}   {notes}")


if __name__ == "__main__":
    main()
