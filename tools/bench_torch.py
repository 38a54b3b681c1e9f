#!/usr/bin/env python3
"""PyTorch/diffusers on the CPU at the phases `lumen-bench model` times, and the two side by side.

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/bench_torch.py --compare .build/release/lumen-bench

builds SD 1.5's text encoder, UNet and VAE from their configs (Tests/Fixtures/sd15-configs) with
random fp32 weights, times each phase (median of --runs after a warm-up, torch.inference_mode, the
same thread count as Lumen), measures a whole 512x512 generation (--steps steps, Euler, guidance
7.5) and its peak RSS in a child process, and with --compare runs `lumen-bench model --json` in
the same invocation and prints both with Lumen/PyTorch ratios. Pinned versions:
tools/requirements-fixtures.txt.

On a GPU (tools/gpu-check.sh runs it so): `--device cuda --dtype fp16` moves the models to the
GPU in half precision and synchronises around every timed call; `--configs DIR` takes another
diffusers folder's configs (random weights all the same), `--sizes` the UNet-step image sizes
(the VAE decodes at the first), `--generate-size` the whole generation's, `--table` prints
`phase seconds` lines.
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


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def build(args):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    configs = args.configs
    # Built on the device where it is a GPU: random initialisation of SD 1.5's billion parameters
    # on the CPU would take most of the check's time limit.
    with torch.device(args.device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(configs, "unet"))).eval()
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(configs, "vae"))).eval()
        with open(os.path.join(configs, "text_encoder", "config.json")) as f:
            text = CLIPTextModel(CLIPTextConfig(**json.load(f))).eval()
    dtype = getattr(torch, DTYPES[args.dtype])
    text, unet, vae = (m.to(device=args.device, dtype=dtype) for m in (text, unet, vae))
    return torch, text, unet, vae


def timed(torch, fn, runs, device):
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        fn()
        sync()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def phases(args):
    torch, text, unet, vae = build(args)
    dev, dtype = args.device, unet.dtype
    ids = torch.full((2, 77), 49407, dtype=torch.long)
    ids[:, 0] = 49406
    ids[:, 1:9] = torch.arange(321, 329)
    ids = ids.to(dev)
    results = [{"phase": "text-encode", "seconds": timed(torch, lambda: text(ids), args.runs, dev)}]
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=dev, dtype=dtype)
    channels = unet.config.in_channels
    for image in args.sizes:
        x = torch.randn(2, channels, image // 8, image // 8, device=dev, dtype=dtype)
        t = torch.tensor([981.0, 981.0], device=dev)
        results.append({"phase": f"unet-step-{image}", "seconds": timed(torch, lambda: unet(x, t, ctx), args.runs, dev)})
    image = args.sizes[0]
    z = torch.randn(1, vae.config.latent_channels, image // 8, image // 8, device=dev, dtype=dtype)
    results.append({"phase": f"vae-decode-{image}", "seconds": timed(torch, lambda: vae.decode(z), args.runs, dev)})
    return results


def generate_child(args):
    torch, text, unet, vae = build(args)
    steps = args.steps
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(args.tokenizer)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        pipe("a benchmark prompt", num_inference_steps=steps, guidance_scale=7.5, height=args.generate_size,
             width=args.generate_size,
             generator=torch.Generator("cpu").manual_seed(0), output_type="np")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--compare", metavar="LUMEN_BENCH", help="also run `LUMEN_BENCH model --json` and print ratios")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--configs", default=CONFIGS, help="a folder with unet/, vae/, text_encoder/ configs (random weights)")
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "..", "Tests", "Fixtures", "tiny-sd", "tokenizer"))
    ap.add_argument("--sizes", default="512,256", help="UNet-step image sizes; the VAE decodes at the first")
    ap.add_argument("--generate-size", type=int, default=512)
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--table", action="store_true", help="print `phase seconds` lines instead of JSON")
    ap.add_argument("--generate-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.generate_child:
        generate_child(args)
        return

    lumen = None
    if args.compare:
        out = subprocess.run([args.compare, "model", "--json", "--runs", str(args.runs), "--steps", str(args.steps)],
                             check=True, capture_output=True, text=True)
        lumen = {r["phase"]: r for r in json.loads(out.stdout)}

    torch_results = {}
    if not args.skip_generate:
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, __file__, "--generate-child", "--threads", str(args.threads), "--steps", str(args.steps),
                                  "--device", args.device, "--dtype", args.dtype, "--configs", args.configs, "--tokenizer", args.tokenizer,
                                  "--generate-size", str(args.generate_size)])
        # wait4 on this one child: RUSAGE_CHILDREN would also count the lumen-bench run above.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise subprocess.CalledProcessError(child.returncode, child.args)
        gen_seconds = time.perf_counter() - t0
        rss = usage.ru_maxrss * 1024
        name = f"generate-{args.generate_size}"
        torch_results[name] = {"phase": name, "seconds": gen_seconds, "peak_rss_bytes": rss, "steps": args.steps}
    torch_results = {**{r["phase"]: r for r in phases(args)}, **torch_results}

    if args.table:
        print(f"# PyTorch {args.device} {args.dtype}")
        for r in torch_results.values():
            print(f"{r['phase']} {r['seconds']:.4f}")
        return
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
