#!/usr/bin/env python3
"""numpy/OpenBLAS float32 matmul at Lumen's SD GEMM shapes: best and median of N runs, one process.

The peer for tools/kernel_harness.c on a shared machine, where the best run (the least disturbed)
is the comparable figure. Set the kernel and threads in the environment, e.g. the AVX2 kernels:

  OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1 python tools/bench_openblas_best.py 40
  LUMEN_CPU_ISA=avx2 /tmp/kernel_harness 1 40

Prints the OpenBLAS kernel (core) that ran, then "MxNxK best-GFLOP/s median-GFLOP/s" per shape.
"""
import ctypes
import sys
import time

import numpy as np

SHAPES = [(4096, 320, 320), (4096, 1280, 320), (4096, 320, 1280), (154, 768, 768)]


def openblas_core():
    for path in sorted({l.split()[-1] for l in open("/proc/self/maps") if "openblas" in l.lower()}):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", ""), ("scipy_openblas", "")):
            f = getattr(lib, f"{prefix}_get_corename{suffix}", None)
            t = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if f is not None:
                f.restype = ctypes.c_char_p
                return f().decode(), t() if t is not None else None
    return None, None


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    core, threads = openblas_core()
    print(f"numpy {np.__version__}, OpenBLAS core {core}, threads {threads}, {reps} runs")
    for m, n, k in SHAPES:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        times.sort()
        flops = 2 * m * n * k
        print(f"{m}x{n}x{k} {flops / times[0] * 1e-9:.1f} {flops / times[len(times) // 2] * 1e-9:.1f}")


if __name__ == "__main__":
    main()
