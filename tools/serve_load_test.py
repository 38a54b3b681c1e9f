#!/usr/bin/env python3
"""A bounded loopback load test of `lumen serve` on the demo model: CLIENTS clients each send
REQUESTS txt2img requests (64x64, STEPS steps) one after another; a 429 is counted and retried
after its Retry-After. Prints p50/p95 latency, throughput, the statuses seen and the server's
resident memory after the warm-up and at the end (docs/serving.md has a run's results).

    python3 tools/serve_load_test.py [path/to/lumen] [--clients 8] [--requests 20] [--steps 10] [--queue 8]
Standard library only; the server is started here on a free loopback port and stopped at the end.
"""
import argparse
import json
import re
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lumen", nargs="?", default=".build/release/lumen")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--queue", type=int, default=8)
    a = ap.parse_args()
    server = subprocess.Popen([a.lumen, "serve", "--port", "0", "--backend", "cpu", "--queue", str(a.queue)],
                              stderr=subprocess.PIPE, text=True)
    try:
        m = None
        while not m:
            line = server.stderr.readline()
            assert line, "the server did not start"
            m = re.search(r"lumen: serving .* on http://127\.0\.0\.1:(\d+)/", line)
        url = f"http://127.0.0.1:{m.group(1)}/sdapi/v1/txt2img"

        def post(seed):
            body = json.dumps({"prompt": "a red circle on a blue background", "steps": a.steps, "width": 64,
                               "height": 64, "seed": seed, "sampler_name": "Euler a"}).encode()
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=600) as r:
                    r.read()
                    return r.status, None
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("Retry-After")

        post(0)  # warm-up: loads the model and compiles its programs
        rss_warm = rss_mib(server.pid)
        latencies, statuses, lock = [], {}, threading.Lock()

        def client(c):
            for i in range(a.requests):
                while True:
                    t0 = time.monotonic()
                    status, retry = post(c * 1000 + i)
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
                    if status == 429:
                        time.sleep(min(float(retry or 1), 5))
                        continue
                    with lock:
                        latencies.append(time.monotonic() - t0)
                    break

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
        for t in threads: t.start()
        for t in threads: t.join()
        wall = time.monotonic() - t0
        rss_end = rss_mib(server.pid)
        q = statistics.quantiles(latencies, n=20)
        result = {
            "clients": a.clients, "requests_each": a.requests, "steps": a.steps, "queue": a.queue,
            "completed": len(latencies), "statuses": statuses, "failures": sum(v for k, v in statuses.items() if k not in (200, 429)),
            "p50_s": round(statistics.median(latencies), 3), "p95_s": round(q[18], 3), "wall_s": round(wall, 1),
            "images_per_s": round(len(latencies) / wall, 3), "rss_after_warmup_mib": round(rss_warm, 1), "rss_end_mib": round(rss_end, 1),
        }
        print(json.dumps(result, indent=1))
        return 0 if result["failures"] == 0 else 1
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    raise SystemExit(main())
