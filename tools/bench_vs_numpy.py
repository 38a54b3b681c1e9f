#!/usr/bin/env python3
"""Lumen's GEMM against numpy's float32 matmul (OpenBLAS) at the same shapes, in one run.

Usage: swift build -c release && python3 tools/bench_vs_numpy.py [--lumen .build/release/lumen]
       [--isa avx2] [--repeat N]

numpy runs in a child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its
environment: some machines set them for old OpenBLAS builds, and they halve a current
OpenBLAS's speed. Nothing else's environment is changed.

--isa avx2 compares the AVX2 paths on an AVX-512 machine: Lumen runs with LUMEN_CPU_ISA=avx2 and
OpenBLAS with OPENBLAS_CORETYPE=Haswell (its AVX2+FMA kernels; threadpoolctl's report of the
kernel that ran is printed). --repeat N alternates the two N times and reports the medians and the
median of the per-round ratios, the figure that survives a shared, noisy machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

SHAPES = [(4096, 320, 320), (4096, 1280, 320), (4096, 320, 1280), (154, 768, 768)]

NUMPY_CHILD = r"""
import json, sys, time
import numpy as np
try:
    from threadpoolctl import threadpool_info
    info = [(p.get("internal_api"), p.get("architecture"), p.get("num_threads")) for p in threadpool_info()]
except Exception:
    # no threadpoolctl: ask the OpenBLAS numpy loaded for the kernel (core) it chose
    import ctypes
    info = []
    for path in sorted({l.split()[-1] for l in open("/proc/self/maps") if "openblas" in l.lower()}):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", ""), ("scipy_openblas", "")):
            f = getattr(lib, f"{prefix}_get_corename{suffix}", None)
            t = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if f is not None:
                f.restype = ctypes.c_char_p
                info.append(("openblas", f().decode(), t() if t is not None else None))
                break
out = []
for m, n, k in json.loads(sys.argv[1]):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    for _ in range(3):
        a @ b
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < 1.0 and len(times) < 200):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    times.sort()
    out.append({"shape": f"{m}x{n}x{k}", "seconds": times[len(times) // 2],
                "gflops": 2 * m * n * k / times[len(times) // 2] / 1e9})
print(json.dumps({"results": out, "blas": info, "numpy": np.__version__}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lumen", default=".build/release/lumen")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    lumen_env = dict(os.environ)
    if args.isa == "avx2":
        env["OPENBLAS_CORETYPE"] = "Haswell"
        lumen_env["LUMEN_CPU_ISA"] = "avx2"
    rounds = []
    for _ in range(args.repeat):
        numpy = json.loads(subprocess.run([sys.executable, "-c", NUMPY_CHILD, json.dumps(SHAPES)],
                                          env=env, check=True, capture_output=True, text=True).stdout)
        lumen = json.loads(subprocess.run([args.lumen, "bench", "--op", "matmul", "--json"], env=lumen_env,
                                          check=True, capture_output=True, text=True).stdout)
        rounds.append((numpy, {r["shape"]: r for r in lumen}))
    numpy = rounds[0][0]
    print(f"numpy {numpy['numpy']}, BLAS {numpy['blas']}; Lumen ISA {rounds[0][1][next(iter(rounds[0][1]))]['isa']}, "
          f"{args.repeat} round(s), medians")
    print(f"{'M x N x K':<18}{'numpy GFLOP/s':>15}{'Lumen GFLOP/s':>15}{'Lumen/numpy':>13}{'Lumen % peak':>14}")
    for i, r in enumerate(numpy["results"]):
        shape = r["shape"]
        if shape not in rounds[0][1]:
            continue
        n = [rd[0]["results"][i]["gflops"] for rd in rounds]
        l = [rd[1][shape]["gflops"] for rd in rounds]
        ratio = statistics.median(b / a for a, b in zip(n, l))
        frac = statistics.median(rd[1][shape]["peak_fraction"] for rd in rounds)
        print(f"{shape:<18}{statistics.median(n):>15.1f}{statistics.median(l):>15.1f}{ratio:>13.2f}{100 * frac:>13.1f}%")


if __name__ == "__main__":
    main()
