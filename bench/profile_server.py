"""Where a request's time goes: py-spy samples `python -m service` under load and sorts the CPU into stages.

Starts the server (bench/loadgen.py's `server`), warms it, attaches `py-spy record` (a dev dependency;
samples every Python thread of the server, no restart, no instrumentation), sends a bounded closed-loop load
with the bench client, and prints, per stage, the share of the server's sampled CPU and the CPU milliseconds
per request, next to the wall-clock stages the server measures itself (queue wait and batch inference, from
its Prometheus histograms). A sample is charged to the first stage rule (in priority order) matching one of
its frames, so the tokeniser called from the request handler counts as `tokenise`, not `parse/validate`.

    python -m bench.profile_server --artifacts-dir artifacts --requests 300 --mc-samples 0
    python -m bench.profile_server --tiny --requests 100                       # smoke run
    python -m bench.profile_server ... --server-env NLP_BACKEND=onnxruntime --raw-out bench/results/stacks.txt

Needs ptrace rights over the server (root, or `kernel.yama.ptrace_scope=0`). On a shared CPU the shares
stay meaningful; the milliseconds grow with contention.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.loadgen import measure, server
from bench.texts import reviews

IDLE = "idle (loop waits)"
C_LOOP = "uvloop C (I/O + waits)"
# (stage, file-path pattern, function pattern), in priority order: a sample belongs to the first rule that
# matches any frame of its stack (so `respond` → pydantic counts as serialise, not as the request's parsing,
# and the tokeniser called from the handler counts as tokenise).
RULES: list[tuple[str, str, str]] = [
    # py-spy counts a thread blocked in epoll as active; a loop waiting for work is idle, not a cost.
    (IDLE, r"selectors\.py", r"\.select$"),
    (IDLE, r"threading\.py", r"\.wait$"),
    ("tokenise", r"models/sentiment/model\.py|tokenizers|transformers/tokenization", r".*"),
    ("tokenise", r"models/sentiment/predictor\.py", r"(^|\.)prepare$"),
    ("uncertainty", r"models/core/(uncertainty|calibration)\.py", r".*"),
    ("uncertainty", r"models/sentiment/predictor\.py", r"(^|\.)_prediction$"),
    ("model", r"models/sentiment/(mc|onnx\w*)\.py|models/core/(padding|dropout|onnx\w*)\.py|onnxruntime", r".*"),
    ("model", r"models/sentiment/predictor\.py", r"(^|\.)_predict$"),
    ("metrics", r"prometheus_client|service/(metrics|http_metrics)\.py", r".*"),
    ("serialise", r"service/adapters\.py", r"to_response"),
    ("serialise", r"service/controllers/predict\.py", r"(^|\.)respond$"),
    ("serialise", r"litestar/(response|serialization)", r"render|encode|serializ|to_asgi_response|__init__"),
    ("serialise", r"msgspec|orjson", r".*"),
    ("queue/batching", r"service/(batcher|batch_selection|admission)\.py", r".*"),
    ("parse/validate", r"litestar/(_kwargs|_signature|datastructures|connection|_multipart)|request_body\.py", r".*"),
    ("parse/validate", r"pydantic|service/controllers/predict\.py|service/schemas\.py|litestar/contrib/pydantic",
     r".*"),
    ("HTTP", r"uvicorn|h11|httptools|litestar|starlette", r".*"),
    ("event loop", r"asyncio|uvloop|selectors|concurrent/futures|threading", r".*"),
]
STAGES = ["parse/validate", "tokenise", "queue/batching", "model", "uncertainty", "serialise", "metrics", "HTTP",
          "event loop", "other", C_LOOP, IDLE]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def stage_of(stack: str) -> str:
    """The stage of one collapsed stack (`root;…;leaf`, frames `func (file:line)`): the first rule (RULES order)
    that matches one of its frames."""
    frames = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame.strip())
        frames.append((match["func"], match["file"]) if match else (frame, ""))
    if frames and frames[-1][0].endswith("Runner.run"):
        return C_LOOP  # inside uvloop's C loop: socket I/O, httptools parsing, and epoll waits alike
    for stage, file_pattern, func_pattern in RULES:
        if any(re.search(file_pattern, file) and re.search(func_pattern, func) for func, file in frames):
            return stage
    return "other"


def stage_samples(raw: str) -> Counter[str]:
    """Samples per stage from py-spy's `--format raw` output (one `stack count` per line)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack)] += int(count)
    return counts


WALL_CLOCK = ("nlp_request_duration_seconds", "nlp_queue_duration_seconds", "nlp_inference_duration_seconds")


async def histogram_sums(base: str, wanted: tuple[str, ...] = WALL_CLOCK) -> dict[str, float]:
    """`<name>_sum` and `<name>_count` of the server's `wanted` histograms (task sentiment)."""
    sums: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for line in (await client.get("/metrics")).text.splitlines():
            name, _, value = line.partition("{")
            if name.endswith(("_sum", "_count")) and name.rsplit("_", 1)[0] in wanted and 'task="sentiment"' in line:
                sums[name] = float(line.rsplit(" ", 1)[1])
    return sums


def report(counts: Counter[str], rate_hz: int, requests: int, before: dict[str, float],
           after: dict[str, float]) -> None:
    # The C loop's samples mix real I/O work with epoll waits that py-spy cannot tell apart: listed, not summed.
    total = sum(n for stage, n in counts.items() if stage not in (IDLE, C_LOOP)) or 1
    print(f"\n{'stage (server CPU, py-spy)':<28}{'samples':>9}{'share':>8}{'CPU ms/request':>16}")
    for stage in STAGES:
        n = counts.get(stage, 0)
        print(f"{stage:<28}{n:>9}{n / total:>8.1%}{n / rate_hz / max(requests, 1) * 1000:>16.2f}")
    print(f"{'total (idle, C loop excl.)':<28}{total:>9}{'':>8}{total / rate_hz / max(requests, 1) * 1000:>16.2f}")

    def delta(name: str) -> tuple[float, float]:
        return (after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0),
                after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0))

    print("\nwall clock (server histograms), mean per item / batch / request:")
    for label, name in (("queue wait per item", "nlp_queue_duration_seconds"),
                        ("inference per batch", "nlp_inference_duration_seconds"),
                        ("request parsed → response", "nlp_request_duration_seconds")):
        seconds, count = delta(name)
        print(f"  {label:<30}{seconds / count * 1000 if count else float('nan'):>9.2f} ms  (n={count:.0f})")


async def run(args: argparse.Namespace, artifacts: Path, workdir: Path) -> int:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    texts = reviews(512, seed=0)
    extra = dict(item.split("=", 1) for item in args.server_env)
    with server(artifacts, extra, args.ready_timeout, workdir / "server.log") as (proc, base):
        await measure(base, "warm-up", texts, args.concurrency, args.concurrency * 4, args.time_limit, args.mc_samples)
        before = await histogram_sums(base)
        raw_path = args.raw_out or workdir / "stacks.txt"
        spy = subprocess.Popen([py_spy, "record", "--pid", str(proc.pid), "--rate", str(args.rate), "--format", "raw",
                                "--nonblocking", "--output", str(raw_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches
        result = await measure(base, "profiled", texts, args.concurrency, args.requests, args.time_limit,
                               args.mc_samples)
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, err = spy.communicate(timeout=60)
        after = await histogram_sums(base)
    if not raw_path.exists():
        print(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}", file=sys.stderr)
        return 1
    print(f"{result.ok} requests ok at concurrency {args.concurrency}, T={args.mc_samples}: "
          f"{result.throughput:.1f} req/s, p50 {result.percentile_ms(50):.0f} ms, "
          f"p95 {result.percentile_ms(95):.0f} ms")
    report(stage_samples(raw_path.read_text()), args.rate, result.ok, before, after)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--tiny", action="store_true", help="profile a random tiny artifact (smoke run)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--mc-samples", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--server-env", action="append", default=[], metavar="NLP_X=value")
    parser.add_argument("--raw-out", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nlp-profile-") as tmp:
        artifacts = args.artifacts_dir
        if args.tiny:
            from bench.tiny import tiny_sentiment_artifacts  # only for the smoke mode: imports training

            artifacts = tiny_sentiment_artifacts(Path(tmp))
        return asyncio.run(run(args, artifacts, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
