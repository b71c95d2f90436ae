"""Ours against a general-purpose peer (LitServe, bench/peer_server.py) on the same artifact, the same client
and the same texts, in ONE run, printing the issue-15 ratios:

- ours T=0 vs LitServe: throughput ratio (target ≥ 1.5×) and p95 ratio (target ≤ 1.0×);
- ours T=20 (the artifact's last-k MC) vs LitServe T=0: throughput ratio (target ≥ 1.0×);
- batching gain (batched ÷ max_batch_size 1 throughput, T=0): ours vs the peer's (target ours ≥ peer's).

Servers run one after another (never two model processes at once): ours batched (T=0 then T=20), ours with
`NLP_MAX_BATCH_SIZE=1`, the peer batched (max batch 32, 5 ms), the peer with batch 1. Each run is
`--requests` closed-loop requests at `--concurrency` after a warm-up (bench/loadgen.py's `measure`). The peer
gets the same torch threads and compute dtype as ours reports. Needs the `bench` extra (`pip install -e
'.[bench]'`). The full measurement (run it on an otherwise idle machine):

    python -m bench.peer --artifacts-dir artifacts --requests 1500 --concurrency 32 --json-out bench/results/peer.json

Short check that everything starts (minutes): `python -m bench.peer --requests 100 --time-limit 30`.
`--rounds 3` repeats the five runs and reports each ratio's median and its per-round values.
Ours on another backend: `--server-env NLP_BACKEND=onnxruntime` (applies to every run of ours).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from bench.loadgen import HEADER, LOOPBACK, RunResult, free_port, measure, model_facts, ratio, server, wait_ready
from bench.texts import reviews


@contextmanager
def peer(model_dir: Path, batch: int, dtype: str, threads: int | None, log_path: Path,
         ready_timeout_s: float) -> Iterator[str]:
    """Run bench/peer_server.py on a free loopback port; yield its base URL once /health answers; stop it."""
    port = free_port()
    command = [sys.executable, "-m", "bench.peer_server", "--model-dir", str(model_dir), "--port", str(port),
               "--max-batch-size", str(batch), "--dtype", dtype, *(["--threads", str(threads)] if threads else [])]
    with log_path.open("w") as log:
        # Its own process group: LitServe starts worker processes, and they must stop with it.
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://{LOOPBACK}:{port}"
    try:
        wait_ready(proc, f"{base}/health", ready_timeout_s, log_path, "peer")
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def one_round(args: argparse.Namespace, workdir: Path, texts: list[str], extra: dict[str, str],
                    label: str) -> tuple[dict[str, object], dict[str, float], list[RunResult]]:
    """The five runs of the module docstring, one after another; returns (our model's facts, the ratios, runs)."""
    c, n, limit = args.concurrency, args.requests, args.time_limit
    runs: list[RunResult] = []

    async def run(base: str, name: str, mc_samples: int | None) -> RunResult:
        result = await measure(base, f"{name}{label}", texts, c, n, limit, mc_samples)
        runs.append(result)
        print(result.row(), flush=True)
        return result

    with server(args.artifacts_dir, extra, args.ready_timeout, workdir / "ours.log") as (_, base):
        facts = await model_facts(base)
        ours = await run(base, "ours batched", 0)
        ours_mc = await run(base, "ours batched", args.mc_samples)
    with server(args.artifacts_dir, {**extra, "NLP_MAX_BATCH_SIZE": "1"}, args.ready_timeout,
                workdir / "ours-1.log") as (_, base):
        ours_1 = await run(base, "ours max_batch_size=1", 0)
    model_dir = Path(args.artifacts_dir) / "sentiment" / str(facts["version"]) / "model"
    dtype = "bfloat16" if facts.get("dtype") == "bfloat16" else "float32"
    threads = int(extra["NLP_TORCH_THREADS"]) if "NLP_TORCH_THREADS" in extra else None
    with peer(model_dir, 32, dtype, threads, workdir / "peer.log", args.ready_timeout) as base:
        lit = await run(base, "litserve batched", 0)
    with peer(model_dir, 1, dtype, threads, workdir / "peer-1.log", args.ready_timeout) as base:
        lit_1 = await run(base, "litserve batch 1", 0)
    ratios = {
        "ours T=0 / LitServe throughput (target >= 1.5)": ratio(ours.throughput, lit.throughput),
        "ours T=0 / LitServe p95 latency (target <= 1.0)": ratio(ours.percentile_ms(95), lit.percentile_ms(95)),
        f"ours T={args.mc_samples} / LitServe T=0 throughput (target >= 1.0)": ratio(ours_mc.throughput,
                                                                                   lit.throughput),
        "batching gain ours (batched / batch 1, T=0)": ratio(ours.throughput, ours_1.throughput),
        "batching gain LitServe (batched / batch 1)": ratio(lit.throughput, lit_1.throughput),
    }
    ratios["batching gain ours / LitServe (target >= 1.0)"] = ratio(
        ratios["batching gain ours (batched / batch 1, T=0)"], ratios["batching gain LitServe (batched / batch 1)"])
    facts = {**facts, "peer": {"dtype": dtype, "threads": threads or "torch default"}}
    return facts, ratios, runs


async def run_bench(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """`--rounds` rounds of `one_round`; with more than one, each ratio's median over the rounds is the result
    (a shared CPU drifts by ±10 % between runs minutes apart: one round can land on either side of a target)."""
    texts = reviews(512, seed=args.seed)
    extra = dict(item.split("=", 1) for item in args.server_env)
    print(HEADER, flush=True)
    rounds = []
    for index in range(args.rounds):
        label = f" #{index + 1}" if args.rounds > 1 else ""
        facts, ratios, runs = await one_round(args, workdir, texts, extra, label)
        rounds.append({"ratios": ratios, "runs": [{**asdict(r), "latencies": None, "throughput": r.throughput,
                                                   "p95_ms": r.percentile_ms(95)} for r in runs]})
    medians = {name: statistics.median(r["ratios"][name] for r in rounds) for name in rounds[0]["ratios"]}
    print(f"\nours: {json.dumps(facts)}")
    width = 62
    print(f"{'ratio':<{width}} {'median' if args.rounds > 1 else '':>7}"
          + ("  per round" if args.rounds > 1 else ""))
    for name, value in medians.items():
        per_round = "  " + " ".join(f"{r['ratios'][name]:.2f}" for r in rounds) if args.rounds > 1 else ""
        print(f"{name:<{width}} {value:6.2f}x{per_round}")
    return {"model": facts, "ratios": medians, "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--requests", type=int, default=1500, help="requests per run (after a warm-up)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--server-env", action="append", default=[], metavar="NLP_X=value",
                        help="extra setting of our server, repeatable; NLP_TORCH_THREADS also sets the peer's")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the five runs; the ratios are their medians over the rounds")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="nlp-peer-") as tmp:
        try:
            results = asyncio.run(run_bench(args, Path(tmp)))
        except RuntimeError as exc:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-4000:]}", file=sys.stderr)
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
