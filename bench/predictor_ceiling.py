"""In-process ceiling of batching: items/s of `predictor.predict` alone (no HTTP, no queue).

Separates what the model can gain from batching from what the HTTP stack costs: for each dtype and
T, it times the same texts at batch size 1, at the batch size in arrival order, and length-sorted,
and prints the ratios. Bounded: a fixed number of texts, each configuration run twice (the first
untimed, to warm kernels for every shape).

    python -m bench.predictor_ceiling --artifacts-dir artifacts [--texts 512] [--batch 32] [--dtypes bfloat16,float32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.texts import reviews
from models.core.artifacts import resolve_artifact
from models.core.predictor import MCRequest, Predictor, PredictorOptions, PreparedItem
from models.registry import load_predictor


def items_per_second(predictor: Predictor, batches: Sequence[Sequence[PreparedItem]], mc_samples: int) -> float:
    """Run every batch once to warm up, then time a second pass; returns items per second."""
    for batch in batches:
        predictor.predict(batch, [MCRequest(mc_samples, 1)] * len(batch))
    count = sum(len(batch) for batch in batches)
    started = time.perf_counter()
    for batch in batches:
        predictor.predict(batch, [MCRequest(mc_samples, 1)] * len(batch))
    return count / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.predictor_ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    artifact = resolve_artifact(args.artifacts_dir, args.task)
    texts = reviews(args.texts, seed=0)
    print(f"{artifact.name}: {args.texts} texts, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"{'dtype':9} {'T':>3} {'bs=1':>8} {'arrival':>8} {'sorted':>8}   ratios (items/s)")
    for dtype in args.dtypes.split(","):
        predictor = load_predictor(artifact, PredictorOptions(device="cpu", dtype=dtype))
        predictor.warmup()
        items = [predictor.prepare(text, {}) for text in texts]
        by_length = sorted(items, key=lambda item: item.n_tokens)
        for mc_samples in (0, args.mc_samples):
            single = items_per_second(predictor, [[item] for item in items], mc_samples)
            arrival, ordered = (
                items_per_second(predictor, [pool[i : i + args.batch] for i in range(0, len(pool), args.batch)],
                                 mc_samples)
                for pool in (items, by_length)
            )
            print(f"{dtype:9} {mc_samples:>3} {single:8.1f} {arrival:8.1f} {ordered:8.1f}   "
                  f"{arrival / single:.2f}x arrival, {ordered / single:.2f}x sorted")


if __name__ == "__main__":
    main()
