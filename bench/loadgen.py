"""Load generator: starts `python -m service` itself, sweeps concurrency, prints throughput and latency,
and the two ratios of issue 3 measured in the same run:

- batched vs `max_batch_size=1` throughput at concurrency 32 (for T=0 and T=20);
- the cost of an MC request (T=20, the artifact's default last-k mode) vs a deterministic one (T=0) at
  concurrency 32, as a throughput ratio (and a p50 latency ratio).

Every run is bounded by a request count *and* a time limit (in-flight requests are cancelled at the
limit and not counted); the server listens on 127.0.0.1 only and is stopped with SIGTERM at the end.

    python -m bench.loadgen --artifacts-dir artifacts            # the quick sentiment artifact
    python -m bench.loadgen --tiny                               # smoke run on a random tiny artifact
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.texts import reviews

LOOPBACK = "127.0.0.1"


@dataclass
class RunResult:
    """One measured run; latencies in seconds of the requests that completed with 200."""

    label: str
    concurrency: int
    mc_samples: int | None
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0
    wall_s: float = 0.0
    mean_batch: float = float("nan")  # items per executed batch on the server during the run
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[index] * 1000

    def row(self) -> str:
        t = "default" if self.mc_samples is None else str(self.mc_samples)
        errs = sum(self.errors.values())
        return (f"{self.label:<26}{self.concurrency:>5}{t:>9}{self.ok:>6}{errs:>5}{self.cancelled:>6}"
                f"{self.wall_s:>8.1f}{self.throughput:>9.1f}{self.percentile_ms(50):>9.0f}"
                f"{self.percentile_ms(95):>9.0f}{self.percentile_ms(99):>9.0f}{self.mean_batch:>7.1f}")


HEADER = (f"{'run':<26}{'conc':>5}{'T':>9}{'ok':>6}{'err':>5}{'cut':>6}{'wall_s':>8}{'req/s':>9}"
          f"{'p50_ms':>9}{'p95_ms':>9}{'p99_ms':>9}{'batch':>7}")


async def batch_totals(client: httpx.AsyncClient) -> tuple[float, float]:
    """(items, batches) the server has executed so far, from its nlp_batch_size histogram."""
    items = batches = 0.0
    for line in (await client.get("/metrics")).text.splitlines():
        # Summed over the `model` label too (every sentiment model; the bench serves one).
        if line.startswith("nlp_batch_size_sum{") and 'task="sentiment"' in line:
            items += float(line.rsplit(" ", 1)[1])
        elif line.startswith("nlp_batch_size_count{") and 'task="sentiment"' in line:
            batches += float(line.rsplit(" ", 1)[1])
    return items, batches


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_ready(proc: subprocess.Popen, url: str, timeout_s: float, log_path: Path, what: str) -> None:
    """Poll `url` until it answers 200; RuntimeError naming `log_path` if `proc` exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s:.0f} s; see {log_path}")
        time.sleep(0.1)


@contextmanager
def server(artifacts: Path, extra_env: dict[str, str], ready_timeout_s: float, log_path: Path
           ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run `python -m service` on a free loopback port; yield (process, base URL) once ready; SIGTERM at exit
    (killed if it has not exited 60 s later)."""
    port = free_port()
    env = {**os.environ, "NLP_HOST": LOOPBACK, "NLP_PORT": str(port), "NLP_ARTIFACTS_DIR": str(artifacts),
           "NLP_TASKS": "sentiment", "NLP_LOG_LEVEL": "warning", **extra_env}
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://{LOOPBACK}:{port}"
    try:
        wait_ready(proc, f"{base}/health/ready", ready_timeout_s, log_path, "server")
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def measure(base: str, label: str, texts: list[str], concurrency: int, requests: int, time_limit_s: float,
                  mc_samples: int | None, seed: int = 0) -> RunResult:
    """`requests` POST /predict calls from `concurrency` workers, cut off after `time_limit_s` seconds."""
    result = RunResult(label, concurrency, mc_samples)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=httpx.Timeout(120.0)) as client:
        async def call(index: int) -> None:
            payload: dict[str, object] = {"task": "sentiment", "text": texts[index % len(texts)], "seed": seed + index}
            if mc_samples is not None:
                payload["mc_samples"] = mc_samples
            started = time.perf_counter()
            response = await client.post("/predict", json=payload)
            if response.status_code == 200:
                result.ok += 1
                result.latencies.append(time.perf_counter() - started)
            else:
                key = str(response.status_code)
                result.errors[key] = result.errors.get(key, 0) + 1

        # Warm the connections and the server's code paths; not timed.
        await asyncio.gather(*(call(i) for i in range(min(concurrency, requests))))
        result.ok, result.latencies, result.errors = 0, [], {}

        counter = iter(range(requests))
        items_before, batches_before = await batch_totals(client)

        async def worker() -> None:
            for index in counter:
                await call(index)

        started = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        done, pending = await asyncio.wait(workers, timeout=time_limit_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # surface client-side errors (e.g. connection refused)
        result.wall_s = min(time.perf_counter() - started, time_limit_s) if pending else time.perf_counter() - started
        result.cancelled = len(pending)
        items_after, batches_after = await batch_totals(client)
        if batches_after > batches_before:
            result.mean_batch = (items_after - items_before) / (batches_after - batches_before)
    return result


async def model_facts(base: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        detail = (await client.get("/models/sentiment")).json()
    predictor = detail.get("predictor", {})
    return {"version": detail.get("version"), "device": detail.get("device"), "dtype": detail.get("dtype"),
            "mc": predictor.get("mc"), "parameters": predictor.get("parameters"), "batching": detail.get("batching")}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


async def run_bench(args: argparse.Namespace, artifacts: Path, workdir: Path) -> dict[str, object]:
    texts = reviews(512, seed=args.seed, min_words=args.min_words, max_words=args.max_words)
    extra = dict(item.split("=", 1) for item in args.server_env)
    c = args.ratio_concurrency
    runs: list[RunResult] = []
    print(HEADER, flush=True)

    def record(result: RunResult) -> RunResult:
        runs.append(result)
        print(result.row(), flush=True)
        return result

    with server(artifacts, extra, args.ready_timeout, workdir / "server-batched.log") as (_, base):
        facts = await model_facts(base)
        for concurrency in args.concurrency:
            record(await measure(base, "batched sweep", texts, concurrency, args.requests, args.time_limit, None))
        det = record(await measure(base, "batched", texts, c, args.requests, args.time_limit, 0))
        mc = record(await measure(base, "batched", texts, c, args.requests, args.time_limit, args.mc_samples))
    with server(artifacts, {**extra, "NLP_MAX_BATCH_SIZE": "1"}, args.ready_timeout,
                workdir / "server-unbatched.log") as (_, base):
        det_1 = record(await measure(base, "max_batch_size=1", texts, c, args.requests, args.time_limit, 0))
        mc_1 = record(await measure(base, "max_batch_size=1", texts, c, args.requests, args.time_limit,
                                    args.mc_samples))
    ratios = {
        f"batched/unbatched throughput, c={c}, T=0": ratio(det.throughput, det_1.throughput),
        f"batched/unbatched throughput, c={c}, T={args.mc_samples}": ratio(mc.throughput, mc_1.throughput),
        f"MC T={args.mc_samples} cost vs T=0, c={c} (throughput ratio)": ratio(det.throughput, mc.throughput),
        f"MC T={args.mc_samples} vs T=0 p50 latency ratio, c={c}": ratio(mc.percentile_ms(50), det.percentile_ms(50)),
    }
    print(f"\nmodel: {json.dumps(facts)}")
    for name, value in ratios.items():
        print(f"{name:<52} {value:6.2f}x")
    return {"model": facts, "ratios": ratios,
            "runs": [{**asdict(r), "latencies": None, "throughput": r.throughput,
                      "p50_ms": r.percentile_ms(50), "p95_ms": r.percentile_ms(95), "p99_ms": r.percentile_ms(99)}
                     for r in runs]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--tiny", action="store_true", help="bench a random tiny artifact (smoke test)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 32])
    parser.add_argument("--ratio-concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256, help="requests per run (after a warm-up)")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--mc-samples", type=int, default=20, help="T of the MC runs")
    parser.add_argument("--min-words", type=int, default=20)
    parser.add_argument("--max-words", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--server-env", action="append", default=[], metavar="NLP_X=value",
                        help="extra server setting, repeatable (e.g. NLP_DTYPE=float32)")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nlp-bench-") as tmp:
        workdir = Path(tmp)
        artifacts = args.artifacts_dir
        if args.tiny:
            from bench.tiny import tiny_sentiment_artifacts  # only for the smoke mode: imports training

            artifacts = tiny_sentiment_artifacts(workdir)
        try:
            results = asyncio.run(run_bench(args, artifacts, workdir))
        except RuntimeError as exc:
            for log in sorted(workdir.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-4000:]}", file=sys.stderr)
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
