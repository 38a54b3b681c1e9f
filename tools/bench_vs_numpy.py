#!/usr/bin/env python3
"""Lumen's GEMM against numpy's float32 matmul (OpenBLAS) at the same shapes, in one run.

Usage: swift build -c release && python3 tools/bench_vs_numpy.py [--lumen .build/release/lumen]

numpy runs in a child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its
environment: some machines set them for old OpenBLAS builds, and they halve a current
OpenBLAS's speed. Nothing else's environment is changed.
"""
import argparse
import json
import os
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
    info = []
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
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    numpy = json.loads(subprocess.run([sys.executable, "-c", NUMPY_CHILD, json.dumps(SHAPES)],
                                      env=env, check=True, capture_output=True, text=True).stdout)
    lumen = json.loads(subprocess.run([args.lumen, "bench", "--op", "matmul", "--json"],
                                      check=True, capture_output=True, text=True).stdout)
    by_shape = {r["shape"]: r for r in lumen}
    print(f"numpy {numpy['numpy']}, BLAS {numpy['blas']}")
    print(f"{'M x N x K':<18}{'numpy GFLOP/s':>15}{'Lumen GFLOP/s':>15}{'Lumen/numpy':>13}{'Lumen % peak':>14}")
    for r in numpy["results"]:
        l = by_shape.get(r["shape"])
        if l is None:
            continue
        print(f"{r['shape']:<18}{r['gflops']:>15.1f}{l['gflops']:>15.1f}{l['gflops'] / r['gflops']:>13.2f}"
              f"{100 * l['peak_fraction']:>13.1f}%")


if __name__ == "__main__":
    main()
