#!/usr/bin/env python3
"""PyTorch/diffusers on the CPU at the phases `lumen-bench model` times, and the two side by side.

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/bench_torch.py --compare .build/release/lumen-bench

builds SD 1.5's text encoder, UNet and VAE from their configs (Tests/Fixtures/sd15-configs) with
random fp32 weights, times each phase (median of --runs after a warm-up, torch.inference_mode, the
same thread count as Lumen), measures a whole 512x512 generation (--steps steps, Euler, guidance
7.5) in a child process, with its peak RSS (the child's own VmHWM from /proc/self/status; wait4's
ru_maxrss beside it) and the pipeline call's time, and with --compare runs `lumen-bench model --json` in
the same invocation and prints both with Lumen/PyTorch ratios. Pinned versions:
tools/requirements-fixtures.txt.

On a GPU (tools/gpu-check.sh runs it so): `--device cuda --dtype fp16` moves the models to the
GPU in half precision and synchronises around every timed call; `--configs DIR` takes another
diffusers folder's configs (random weights all the same), `--sizes` the UNet-step image sizes
(the VAE decodes at the first), `--generate-size` the whole generation's, `--table` prints
`phase seconds` lines.

SDXL base (`--model sdxl`): the configs of Tests/Fixtures/sdxl-configs (stable-diffusion-xl-base-1.0's),
both text encoders (CLIPTextModel and CLIPTextModelWithProjection, penultimate states and the pooled
projection), the UNet step at --sizes (default 1024) with the added text embeds and time ids, the
VAE decode in fp32 (its force_upcast), and StableDiffusionXLPipeline for the whole generation; each
phase builds only its own networks and frees them before the next (fp32 SDXL is about 14 GB). With
--compare it runs `lumen-bench model --model sdxl` with the same sizes, steps and phases
(--lumen-work-dir: where lumen-bench keeps its random-weight folder). --phases picks among text,
unet, vae, generate.

SD 1.5 with a ControlNet (`--model controlnet`): the SD 1.5 UNet of Tests/Fixtures/sd15-configs and
`ControlNetModel.from_unet(unet)` (SD 1.5's ControlNet architecture, conditioning embedding
16/32/96/256, as lllyasviel's sd-controlnet-* are), fp32; `controlnet-N` times the ControlNet alone
and `controlnet-step-N` the ControlNet and the UNet with its residuals (one denoising step with
guidance, batch 2), at --sizes (default 512); `generate-N` runs StableDiffusionControlNetPipeline
with the conditioning image lumen-bench uses (a grid of white lines). --phases: unet, generate.
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
SDXL_CONFIGS = os.path.join(HERE, "..", "Tests", "Fixtures", "sdxl-configs")


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


def build_sdxl(args, part):
    """One part of SDXL base with random weights: "text" (both encoders), "unet" or "vae"."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, DTYPES[args.dtype])

    def text_config(name):
        with open(os.path.join(args.configs, name, "config.json")) as f:
            return CLIPTextConfig(**json.load(f))
    with torch.device(args.device):
        if part == "text":
            return [CLIPTextModel(text_config("text_encoder")).eval().to(dtype=dtype),
                    CLIPTextModelWithProjection(text_config("text_encoder_2")).eval().to(dtype=dtype)]
        if part == "unet":
            return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(args.configs, "unet"))).eval().to(dtype=dtype)
        # force_upcast: diffusers decodes SDXL's VAE in fp32 whatever the pipeline's dtype.
        return AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(args.configs, "vae"))).eval()


def phases_sdxl(args):
    import gc
    import torch
    dev, dtype = args.device, getattr(torch, DTYPES[args.dtype])
    results = []
    if "text" in args.phases:
        text, text2 = build_sdxl(args, "text")
        ids = torch.full((2, 77), 49407, dtype=torch.long)
        ids[:, 0] = 49406
        ids[:, 1:9] = torch.arange(321, 329)
        ids2 = ids.clone()
        ids2[:, 10:] = 0  # the second tokenizer pads with "!"
        ids, ids2 = ids.to(dev), ids2.to(dev)

        def encode():
            a = text(ids, output_hidden_states=True).hidden_states[-2]
            b = text2(ids2, output_hidden_states=True)
            return torch.cat([a, b.hidden_states[-2]], dim=-1), b.text_embeds
        results.append({"phase": "text-encode", "seconds": timed(torch, encode, args.runs, dev)})
        del text, text2
        gc.collect()
    if "unet" in args.phases:
        unet = build_sdxl(args, "unet")
        ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=dev, dtype=dtype)
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        embeds = torch.randn(2, pooled, device=dev, dtype=dtype)
        for image in args.sizes:
            x = torch.randn(2, unet.config.in_channels, image // 8, image // 8, device=dev, dtype=dtype)
            t = torch.tensor([981.0, 981.0], device=dev)
            ids = torch.tensor([[image, image, 0, 0, image, image]] * 2, device=dev, dtype=dtype)
            cond = {"text_embeds": embeds, "time_ids": ids}
            results.append({"phase": f"unet-step-{image}",
                            "seconds": timed(torch, lambda: unet(x, t, ctx, added_cond_kwargs=cond), args.runs, dev)})
        del unet
        gc.collect()
    if "vae" in args.phases:
        vae = build_sdxl(args, "vae")
        image = args.sizes[0]
        z = torch.randn(1, vae.config.latent_channels, image // 8, image // 8, device=dev)
        results.append({"phase": f"vae-decode-{image}", "seconds": timed(torch, lambda: vae.decode(z), args.runs, dev)})
    return results


def peak_resident_bytes():
    """This process's own peak RSS: VmHWM from /proc/self/status (Linux), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def report_child(args, pipeline_seconds):
    """The generate child's own figures for its parent: the pipeline call's time and VmHWM."""
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump({"pipeline_seconds": pipeline_seconds, "vmhwm_bytes": peak_resident_bytes()}, f)


def log_load(what):
    """The machine's 1-minute load average on stderr: the machines these run on are shared."""
    print(f"bench_torch: load average {os.getloadavg()[0]:.2f} {what}", file=sys.stderr, flush=True)


def generate_child_sdxl(args):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer
    text, text2 = build_sdxl(args, "text")
    unet, vae = build_sdxl(args, "unet"), build_sdxl(args, "vae")
    tok = CLIPTokenizer.from_pretrained(args.tokenizer)
    tok2 = CLIPTokenizer.from_pretrained(args.tokenizer, pad_token="!")
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                   timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text, text_encoder_2=text2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=sched, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        pipe("a benchmark prompt", num_inference_steps=args.steps, guidance_scale=7.5, height=args.generate_size,
             width=args.generate_size, generator=torch.Generator("cpu").manual_seed(0), output_type="np")
    report_child(args, time.perf_counter() - t0)


def build_controlnet(args):
    """SD 1.5's UNet and a ControlNet made from it (diffusers' from_unet: the encoder half copied,
    conditioning embedding 16, 32, 96, 256), random weights."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, DTYPES[args.dtype])
    with torch.device(args.device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(args.configs, "unet"))).eval()
        controlnet = ControlNetModel.from_unet(unet).eval()
    return torch, unet.to(dtype=dtype), controlnet.to(dtype=dtype)


def control_image(size):
    """The conditioning image of lumen-bench's generate phase (ControlNetModelBenchmark.swift): white
    lines on black where x % 37 == 0, y % 29 == 0 or (x + y) % 53 == 0."""
    import numpy as np
    from PIL import Image
    y, x = np.mgrid[0:size, 0:size]
    on = (x % 37 == 0) | (y % 29 == 0) | ((x + y) % 53 == 0)
    return Image.fromarray(np.repeat((on * 255).astype(np.uint8)[:, :, None], 3, axis=2))


def phases_controlnet(args):
    torch, unet, controlnet = build_controlnet(args)
    dev, dtype = args.device, unet.dtype
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=dev, dtype=dtype)
    results = []
    for image in args.sizes:
        x = torch.randn(2, unet.config.in_channels, image // 8, image // 8, device=dev, dtype=dtype)
        t = torch.tensor([981.0, 981.0], device=dev)
        # Sparse ones, as an edge map (lumen-bench's phase input is the same kind).
        cond = (torch.rand(2, 3, image, image, device=dev) < 9 / 97).to(dtype)

        def control():
            return controlnet(x, t, ctx, controlnet_cond=cond, conditioning_scale=1.0, return_dict=False)

        def step():
            down, mid = control()
            return unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        results.append({"phase": f"controlnet-{image}", "seconds": timed(torch, control, args.runs, dev)})
        results.append({"phase": f"controlnet-step-{image}", "seconds": timed(torch, step, args.runs, dev)})
    return results


def generate_child_controlnet(args):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionControlNetPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    torch, unet, controlnet = build_controlnet(args)
    with torch.device(args.device):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(args.configs, "vae"))).eval()
        with open(os.path.join(args.configs, "text_encoder", "config.json")) as f:
            text = CLIPTextModel(CLIPTextConfig(**json.load(f))).eval()
    tok = CLIPTokenizer.from_pretrained(args.tokenizer)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, controlnet=controlnet, scheduler=sched,
                                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        pipe("a benchmark prompt", image=control_image(args.generate_size), num_inference_steps=args.steps, guidance_scale=7.5,
             height=args.generate_size, width=args.generate_size, generator=torch.Generator("cpu").manual_seed(0), output_type="np")
    report_child(args, time.perf_counter() - t0)


def generate_child(args):
    if args.model == "sdxl":
        generate_child_sdxl(args)
        return
    if args.model == "controlnet":
        generate_child_controlnet(args)
        return
    torch, text, unet, vae = build(args)
    steps = args.steps
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(args.tokenizer)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        pipe("a benchmark prompt", num_inference_steps=steps, guidance_scale=7.5, height=args.generate_size,
             width=args.generate_size,
             generator=torch.Generator("cpu").manual_seed(0), output_type="np")
    report_child(args, time.perf_counter() - t0)


def physical_cores():
    """Lumen's default thread count (CPUTopology.swift): the physical cores among the CPUs this
    process may run on (the cgroup quota aside), so both engines run the same count by default."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        key = None
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/{name}") as f:
                    key = f.read().strip()
                break
            except OSError:
                pass
        cores.add(key or f"cpu{cpu}")
    return max(1, len(cores))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=physical_cores(),
                    help="PyTorch's threads, and lumen-bench's with --compare (default: the physical cores this process may use)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--compare", metavar="LUMEN_BENCH", help="also run `LUMEN_BENCH model --json` and print ratios")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--model", default="sd15", choices=["sd15", "sdxl", "controlnet"])
    ap.add_argument("--configs", default=None, help="a folder with unet/, vae/, text_encoder/ configs (random weights); "
                    "default Tests/Fixtures/sd15-configs or sdxl-configs")
    ap.add_argument("--phases", default=None, help="text, unet, vae, generate (comma-separated; controlnet: unet, generate)")
    ap.add_argument("--lumen-work-dir", help="with --compare: lumen-bench's --work-dir")
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "..", "Tests", "Fixtures", "tiny-sd", "tokenizer"))
    ap.add_argument("--sizes", default=None, help="UNet-step image sizes; the VAE decodes at the first (default 512,256; sdxl 1024)")
    ap.add_argument("--generate-size", type=int, default=None, help="default 512; sdxl 1024")
    ap.add_argument("--skip-generate", action="store_true", help="PyTorch skips the whole generation (lumen-bench still runs it "
                    "when --phases has generate)")
    ap.add_argument("--table", action="store_true", help="print `phase seconds` lines instead of JSON")
    ap.add_argument("--generate-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sdxl, controlnet = args.model == "sdxl", args.model == "controlnet"
    args.configs = args.configs or (SDXL_CONFIGS if sdxl else CONFIGS)
    args.sizes = [int(s) for s in (args.sizes or ("1024" if sdxl else "512" if controlnet else "512,256")).split(",")]
    args.generate_size = args.generate_size or (1024 if sdxl else 512)
    args.phases = set((args.phases or ("unet,generate" if controlnet else "text,unet,vae,generate")).split(","))
    if "generate" not in args.phases:
        args.skip_generate = True
    if args.generate_child:
        generate_child(args)
        return

    lumen = None
    if args.compare:
        command = [args.compare, "model", "--json", "--runs", str(args.runs), "--steps", str(args.steps)]
        if sdxl or controlnet:
            command += ["--model", args.model, "--sizes", ",".join(map(str, args.sizes)), "--generate-size", str(args.generate_size),
                        "--phases", ",".join(sorted(args.phases))]
            if args.lumen_work_dir:
                command += ["--work-dir", args.lumen_work_dir]
        # stderr passes through: lumen-bench logs each phase as it starts.
        log_load("before lumen-bench")
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, LUMEN_THREADS=str(args.threads)))
        log_load("after lumen-bench")
        lumen = {r["phase"]: r for r in json.loads(out.stdout)}

    torch_results = {}
    if not args.skip_generate:
        import tempfile
        load_before = os.getloadavg()[0]
        result_file = tempfile.NamedTemporaryFile(prefix="bench-torch-", suffix=".json", delete=False).name
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, __file__, "--generate-child", "--threads", str(args.threads), "--steps", str(args.steps),
                                  "--device", args.device, "--dtype", args.dtype, "--configs", args.configs, "--tokenizer", args.tokenizer,
                                  "--generate-size", str(args.generate_size), "--model", args.model, "--result-file", result_file])
        # wait4 on this one child: RUSAGE_CHILDREN would also count the lumen-bench run above.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise subprocess.CalledProcessError(child.returncode, child.args)
        gen_seconds = time.perf_counter() - t0
        with open(result_file) as f:
            own = json.load(f)
        os.unlink(result_file)
        name = f"generate-{args.generate_size}"
        # The peak is the child's own VmHWM (/proc/self/status, read by the child as the pipeline
        # returns), as Lumen's is; wait4's ru_maxrss is kept beside it as a cross-check. "seconds" is
        # the child's whole life (imports, random initialisation of the networks, the pipeline),
        # "pipeline_seconds" the pipeline call alone.
        torch_results[name] = {"phase": name, "seconds": gen_seconds, "pipeline_seconds": own["pipeline_seconds"],
                               "peak_rss_bytes": own["vmhwm_bytes"], "ru_maxrss_bytes": usage.ru_maxrss * 1024,
                               "steps": args.steps, "load_before": load_before, "load_after": os.getloadavg()[0]}
    log_load("before the PyTorch phases")
    measured = phases_sdxl(args) if sdxl else (phases_controlnet(args) if "unet" in args.phases else []) if controlnet else phases(args)
    torch_results = {**{r["phase"]: r for r in measured}, **torch_results}
    log_load("after the PyTorch phases")

    if args.table:
        print(f"# PyTorch {args.device} {args.dtype}")
        for r in torch_results.values():
            print(f"{r['phase']} {r['seconds']:.4f}")
        return
    if lumen is None:
        print(json.dumps(list(torch_results.values()), indent=1))
        return
    print(f"{'phase':<20}{'PyTorch s':>11}{'Lumen s':>10}{'Lumen/PyTorch':>15}   notes")
    gen = f"generate-{args.generate_size}"
    names = ([n for s in args.sizes for n in (f"controlnet-{s}", f"controlnet-step-{s}")] if controlnet else
             ["text-encode"] + [f"unet-step-{s}" for s in args.sizes] + [f"vae-decode-{args.sizes[0]}"])
    for phase in names + [gen]:
        p, l = torch_results.get(phase), lumen.get(phase)
        if l and not p and phase == gen:  # --skip-generate: PyTorch's generation not run this time
            print(f"{phase:<16}{'-':>11}{l['seconds']:>10.3f}{'-':>15}   {args.steps} steps; peak RSS (VmHWM) Lumen "
                  f"{l['peak_rss_bytes'] / 1e9:.2f} GB")
        if not p or not l:
            continue
        notes = f"Lumen ISA {l['isa']}; " if l.get("isa") else ""
        if phase == gen:
            notes += (f"{args.steps} steps; peak RSS (VmHWM) PyTorch {p['peak_rss_bytes'] / 1e9:.2f} GB "
                      f"(ru_maxrss {p['ru_maxrss_bytes'] / 1e9:.2f}), Lumen {l['peak_rss_bytes'] / 1e9:.2f} GB; "
                      f"PyTorch pipeline call {p['pipeline_seconds']:.1f} s; load {p['load_before']:.1f} -> {p['load_after']:.1f}")
        elif l.get("gflops"):
            notes += f"Lumen {l['gflops']:.0f} GFLOP/s"
            if l.get("breakdown"):  # Lumen's kernel time by op family, from its profiled run
                top = sorted(l["breakdown"].items(), key=lambda kv: -kv[1])[:6]
                notes += "; " + ", ".join(f"{k} {v * 100:.0f}%" for k, v in top)
        print(f"{phase:<20}{p['seconds']:>11.3f}{l['seconds']:>10.3f}{l['seconds'] / p['seconds']:>15.2f}   {notes}")


if __name__ == "__main__":
    main()
