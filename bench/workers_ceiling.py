"""In-process: one inference thread on all the torch threads against `--workers` threads on a share each.

What `NLP_INFERENCE_WORKERS` (service/batcher.py) changes, without HTTP: the same batches of `--batch` reviews
through `predictor.predict`, (a) one after the other on one thread with `--threads` torch threads, (b) split
between `--workers` threads running at once with `--threads` / workers torch threads each (as the service's
batcher gives them). Alternated `--rounds` times, so load from other processes hits both alike;
prints items/s per round and the median ratio (b) / (a).

    python -m bench.workers_ceiling --artifacts-dir artifacts [--texts 512] [--batch 16] [--workers 2] [--rounds 3]

Only predictors with `concurrent_batches` (sentiment's fast path) may run (b); others are refused.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.texts import reviews
from models.core.artifacts import resolve_artifact
from models.core.predictor import MCRequest, Predictor, PredictorOptions, PreparedItem
from models.registry import load_predictor
from service.devices import use_threads


def _run(predictor: Predictor, batches: Sequence[Sequence[PreparedItem]], mc_samples: int) -> None:
    for batch in batches:
        predictor.predict(batch, [MCRequest(mc_samples, 1)] * len(batch))


def timed(predictor: Predictor, batches: Sequence[Sequence[PreparedItem]], mc_samples: int, workers: int,
          threads: int) -> float:
    """Items/s of all `batches`, on one thread (`workers` 1, `threads` torch threads) or on `workers` threads
    with their share of `threads` each; every thread runs its first batch untimed first."""
    each = max(1, threads // workers)
    shares = [list(batches[i::workers]) for i in range(workers)]
    ready, go = threading.Barrier(workers + 1), threading.Event()

    def work(share: list[Sequence[PreparedItem]]) -> None:
        use_threads(each)
        _run(predictor, share[:1], mc_samples)  # warm this thread's kernels
        ready.wait()
        go.wait()
        _run(predictor, share, mc_samples)

    pool = [threading.Thread(target=work, args=(share,)) for share in shares]
    for thread in pool:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    go.set()
    for thread in pool:
        thread.join()
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers_ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--version", default=None, help="artifact version (default: the newest)")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mc-samples", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in all (default: torch's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    artifact = resolve_artifact(args.artifacts_dir, args.task, args.version)
    predictor = load_predictor(artifact, PredictorOptions(device="cpu", dtype=args.dtype))
    if args.workers > 1 and not getattr(predictor, "concurrent_batches", False):
        parser.error(f"{artifact}: its predictor does not allow concurrent batches")
    items = [predictor.prepare(text, {}) for text in reviews(args.texts, seed=0)]
    batches = [items[i: i + args.batch] for i in range(0, len(items), args.batch)]
    print(f"{artifact.name}: {len(items)} texts, batches of {args.batch}, T = {args.mc_samples}, {threads} torch "
          f"threads, {args.dtype}")
    ratios = []
    for round_ in range(1, args.rounds + 1):
        one = timed(predictor, batches, args.mc_samples, 1, threads)
        many = timed(predictor, batches, args.mc_samples, args.workers, threads)
        ratios.append(many / one)
        print(f"round {round_}: 1 thread × {threads} torch threads {one:7.1f} items/s; {args.workers} threads × "
              f"{max(1, threads // args.workers)} {many:7.1f} items/s; ratio {many / one:.2f}x")
    print(f"median ratio {args.workers} workers / 1: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
