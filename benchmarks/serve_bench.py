"""Latency and throughput of ``dermlearn serve`` (not a test).

For each backend (torch, onnx) and micro-batching setting (on: up to ``--max-batch`` images per
model call; off: one image per call) it starts a real server on a free loopback port, sends
``--requests`` uploads at each concurrency level (1, 4, 16 clients, one keep-alive connection
each) and prints p50/p95 latency, requests/s, errors and the mean batch size the server formed.
In the same run it measures the raw single-image latency of the same backend in-process (model
call only, and decode + preprocess + model call), and reports served p50 at 1 client divided by
those (goal: <= 1.3x the raw model latency).

``--compare-limits`` measures instead what the service's limits cost (issue 24): two servers side
by side, one with the limits at their defaults and a bearer token, one with every limit off or
very high and no token, loaded in turn (``--rounds`` times, alternating, so that drift on a busy
machine hits both alike) at each concurrency level; it prints the throughput ratio (goal: the
limits cost under 5%, a ratio >= 0.95).

    .venv/bin/python benchmarks/serve_bench.py runs/ham/model
    .venv/bin/python benchmarks/serve_bench.py --tiny --requests 20 --concurrency 1,4 # smoke
    .venv/bin/python benchmarks/serve_bench.py --tiny --compare-limits --concurrency 1,16

``--overhead`` times in-process what the limits add to one request (no server, no model): the
admission middleware, the image-size check, the multipart reader (also from ``--baseline-src``).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "ph2" / "images" / "IMD002.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: --compare-limits: the server's options with every limit off or very high.
LIMITS_OFF = ["--request-timeout-s", "3600", "--max-concurrency", "100000", "--max-queue",
              "100000", "--max-connections", "100000", "--max-parts", "100000",
              "--max-header-kb", "1024", "--min-image-side", "1"]
BENCH_TOKEN = "serve-bench-token-0123456789abcdef"


def tiny_model(folder: Path) -> Path:
    """A throwaway EfficientNet-Lite0 model (bundled ImageNet backbone, random head) with OOD
    statistics fitted on 16 synthetic lesion images (the service refuses a model without)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from serving_fixtures import fit_synthetic_ood, make_tiny_model

    return fit_synthetic_ood(make_tiny_model(folder / "bench" / "model", image_size=224),
                             size=300)


def photo_bytes(path: Path | None) -> bytes:
    if path and path.is_file():
        return path.read_bytes()
    import io

    sys.path.insert(0, str(ROOT / "tests"))
    from serving_fixtures import synthetic_lesion

    buf = io.BytesIO()
    synthetic_lesion(size=600).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def raw_latency(model: Path, backend: str, threads: int, data: bytes, repeats: int
                ) -> dict[str, float]:
    """Median in-process latency (ms) of one image: model call, and decode + preprocess + model."""
    from dermlearn.data.images import read_image
    from dermlearn.inference.backends import create_backend

    engine = create_backend(model, backend, threads=threads)
    image = read_image(data)
    batch = engine.preprocess_images([image])
    for _ in range(5):
        engine.infer(batch)
    model_ms, full_ms = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.infer(batch)
        model_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        engine.infer(engine.preprocess_images([read_image(data)]))
        full_ms.append((time.perf_counter() - t0) * 1e3)
    return {"model_ms": statistics.median(model_ms), "end_to_end_ms": statistics.median(full_ms)}


class Server:
    def __init__(self, model: Path, backend: str, threads: int, max_batch: int,
                 max_wait_ms: float, extra: list[str] | None = None,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "dermlearn.cli", "serve", str(model), "--port",
                    str(self.port), "--backend", backend, "--threads", str(threads),
                    "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
                    "--log-level", "warning", *(extra or [])]
        inherited = {k: v for k, v in os.environ.items() if k != "DERMLEARN_TOKEN"}
        self.env = {**inherited, **(env or {})}

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(url: str, data: bytes, clients: int, requests: int) -> dict[str, float]:
    """``requests`` uploads from ``clients`` concurrent keep-alive clients (each sends the
    bench's bearer token; a server without a token ignores it)."""
    latencies: list[float] = []
    errors = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120,
                          headers={"Authorization": f"Bearer {BENCH_TOKEN}"}) as http:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/predict", files={"image": ("p.jpg", data, "image/jpeg")})
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ok, r = False, exc
                dt = (time.perf_counter() - t0) * 1e3
                with lock:
                    (latencies if ok else errors).append(dt if ok else str(r))

    before = httpx.get(url + "/health").json()["batching"]
    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = httpx.get(url + "/health").json()["batching"]
    batches = after["batches"] - before["batches"]
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "requests": requests, "errors": len(errors),
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "req_per_s": len(latencies) / wall,
            "mean_batch": (after["items"] - before["items"]) / batches if batches else 0.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model directory (or --tiny)")
    parser.add_argument("--tiny", action="store_true", help="benchmark a throwaway 224 px "
                        "EfficientNet-Lite0 model")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to upload")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=200, help="per concurrency level")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the runs with micro-batching off")
    parser.add_argument("--raw-repeats", type=int, default=30)
    parser.add_argument("--compare-limits", action="store_true",
                        help="limits at their defaults + a token vs limits off, side by side")
    parser.add_argument("--rounds", type=int, default=2,
                        help="--compare-limits: alternating rounds per concurrency level")
    parser.add_argument("--baseline-src", type=Path,
                        help="--compare-limits: run the 'off' side from this source tree (a "
                        "`git archive REV src` export) with its own defaults instead")
    parser.add_argument("--overhead", action="store_true",
                        help="time the limits' per-request code in-process, then stop")
    parser.add_argument("--no-ood", action="store_true",
                        help="serve with the OOD screen off (a MODEL without statistics)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.overhead:
        overhead(photo_bytes(args.image), args.baseline_src)
        return 0
    if not args.model and not args.tiny:
        parser.error("give a MODEL directory or --tiny")
    tmp = tempfile.TemporaryDirectory()
    model = Path(args.model) if args.model else tiny_model(Path(tmp.name))
    data = photo_bytes(args.image)
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.compare_limits:
        rows = compare_limits(model, data, levels, args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        tmp.cleanup()
        return 1 if any(r["errors"] for r in rows) else 0
    rows = []
    for backend in args.backends.split(","):
        raw = raw_latency(model, backend, args.threads, data, args.raw_repeats)
        print(f"[{backend}] raw single image: model {raw['model_ms']:.1f} ms, decode + "
              f"preprocess + model {raw['end_to_end_ms']:.1f} ms", flush=True)
        settings = [("on", args.max_batch)] + ([] if args.no_compare else [("off", 1)])
        for batching, max_batch in settings:
            with Server(model, backend, args.threads, max_batch, args.max_wait_ms,
                        ["--no-ood"] if args.no_ood else []) as server:
                load(server.url, data, 1, 5)  # warm-up
                for clients in levels:
                    row = {"backend": backend, "batching": batching,
                           **load(server.url, data, clients, args.requests),
                           "raw_model_ms": raw["model_ms"], "raw_e2e_ms": raw["end_to_end_ms"]}
                    rows.append(row)
                    print(f"  batching {batching:3s} clients {clients:3d}: p50 "
                          f"{row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms, "
                          f"{row['req_per_s']:.1f} req/s, errors {row['errors']}", flush=True)
    print()
    header = (f"{'backend':8s} {'batching':8s} {'clients':>7s} {'p50 ms':>8s} {'p95 ms':>8s} "
              f"{'req/s':>7s} {'errors':>6s} {'batch':>6s} {'p50/model':>9s} {'p50/e2e':>8s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r["p50_ms"] / r["raw_model_ms"] if r["clients"] == 1 else float("nan")
        ratio2 = r["p50_ms"] / r["raw_e2e_ms"] if r["clients"] == 1 else float("nan")
        print(f"{r['backend']:8s} {r['batching']:8s} {r['clients']:7d} {r['p50_ms']:8.1f} "
              f"{r['p95_ms']:8.1f} {r['req_per_s']:7.1f} {r['errors']:6d} "
              f"{r['mean_batch']:6.2f} {ratio:9.2f} {ratio2:8.2f}")
    print("\np50/model: served p50 at 1 client / raw single-image model latency (goal <= 1.3); "
          "p50/e2e: the same over in-process decode + preprocess + model.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    tmp.cleanup()
    return 1 if any(r["errors"] for r in rows) else 0


def compare_limits(model: Path, data: bytes, levels: list[int], args: argparse.Namespace
                   ) -> list[dict]:
    """Throughput with the limits at their defaults (and a token) against limits off, for each
    backend and concurrency level: both servers up at once, loaded in turn."""
    rows = []
    screen = ["--no-ood"] if args.no_ood else []
    base = "base" if args.baseline_src else "off"  # the other side's label
    for backend in args.backends.split(","):
        on = Server(model, backend, args.threads, args.max_batch, args.max_wait_ms, screen,
                    env={"DERMLEARN_TOKEN": BENCH_TOKEN})
        if args.baseline_src:  # the code before the limits, as it was
            off = Server(model, backend, args.threads, args.max_batch, args.max_wait_ms,
                         env={"PYTHONPATH": str(args.baseline_src.resolve())})
        else:
            off = Server(model, backend, args.threads, args.max_batch, args.max_wait_ms,
                         [*screen, *LIMITS_OFF])
        with on, off:
            for server in (on, off):
                load(server.url, data, 1, 5)  # warm-up
            for clients in levels:
                runs: dict[str, list[dict]] = {"on": [], base: []}
                for round_ in range(args.rounds):
                    order = [("on", on), (base, off)]
                    for name, server in order if round_ % 2 == 0 else order[::-1]:
                        runs[name].append(load(server.url, data, clients, args.requests))
                for name, results in runs.items():
                    row = {"backend": backend, "limits": name, "clients": clients,
                           "requests": sum(r["requests"] for r in results),
                           "errors": sum(r["errors"] for r in results),
                           "req_per_s": statistics.mean(r["req_per_s"] for r in results),
                           "p50_ms": statistics.median(r["p50_ms"] for r in results),
                           "p95_ms": max(r["p95_ms"] for r in results)}
                    rows.append(row)
                ratio = rows[-2]["req_per_s"] / rows[-1]["req_per_s"]
                rows[-2]["ratio"] = rows[-1]["ratio"] = ratio
                print(f"  [{backend}] clients {clients:3d}: limits on {rows[-2]['req_per_s']:.1f} "
                      f"req/s, {base} {rows[-1]['req_per_s']:.1f} req/s, ratio {ratio:.3f}",
                      flush=True)
    print()
    header = (f"{'backend':8s} {'limits':6s} {'clients':>7s} {'requests':>8s} {'p50 ms':>8s} "
              f"{'p95 ms':>8s} {'req/s':>7s} {'errors':>6s} {'on/off':>7s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['backend']:8s} {r['limits']:6s} {r['clients']:7d} {r['requests']:8d} "
              f"{r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['req_per_s']:7.1f} {r['errors']:6d} "
              f"{r['ratio']:7.3f}")
    print(f"\non/{base}: throughput with the limits at their defaults and a token over "
          + ("throughput of the baseline source tree" if args.baseline_src else
             "throughput with every limit off") + " (goal >= 0.95: under 5% cost).")
    return rows


def _median_us(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def overhead(data: bytes, baseline_src: Path | None, repeats: int = 2000) -> None:
    """Median time (us) of what the limits add to one request, in-process."""
    import asyncio
    import importlib.util

    from dermlearn.serving import uploads
    from dermlearn.serving.limits import Guard
    from dermlearn.serving.metrics import ServiceMetrics
    from dermlearn.serving.service import _declared_size

    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"'
            f"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()

    async def chunks():  # as uvicorn hands them over
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    async def read_many(module, n: int) -> None:
        for _ in range(n):
            await module.read_multipart_file(f"multipart/form-data; boundary={boundary}",
                                             str(len(body)), chunks(), max_bytes=20 * 2**20,
                                             text_fields=("age", "sex", "site"))

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def call_many(asgi, n: int) -> None:
        scope = {"type": "http", "path": "/v1/predict", "method": "POST",
                 "headers": [(b"authorization", f"Bearer {BENCH_TOKEN}".encode())]}
        for _ in range(n):
            await asgi(scope, None, _discard)

    def per_call_us(coroutine, n: int) -> float:
        t0 = time.perf_counter()
        asyncio.run(coroutine)
        return (time.perf_counter() - t0) / n * 1e6

    metrics = ServiceMetrics(queue_depth=lambda: 0, in_flight=lambda: 0, ready=lambda: 1)
    guard = Guard(app, token=BENCH_TOKEN, max_concurrency=64, metrics=metrics)
    n = repeats * 10
    print(f"upload: {len(data):,} bytes; median of {repeats} (size check) or mean of {n} calls")
    print(f"  admission middleware (token, concurrency, headers, metrics): "
          f"{per_call_us(call_many(guard, n), n) - per_call_us(call_many(app, n), n):.1f} us")
    print(f"  image size from the header (--min-image-side): "
          f"{_median_us(lambda: _declared_size(data), repeats):.1f} us")
    readers = [("multipart reader", uploads)]
    if baseline_src:
        spec = importlib.util.spec_from_file_location(
            "baseline_uploads", baseline_src / "dermlearn" / "serving" / "uploads.py")
        old = importlib.util.module_from_spec(spec)
        sys.modules["baseline_uploads"] = old
        spec.loader.exec_module(old)
        readers.append(("multipart reader, --baseline-src", old))
    for name, module in readers:
        count = max(1, repeats // 10)
        print(f"  {name}: {per_call_us(read_many(module, count), count):.0f} us")


async def _discard(message: dict) -> None:
    pass


if __name__ == "__main__":
    sys.exit(main())
