"""What the OOD score costs a deterministic request: `predictor.predict` time of the same batches with the artifact's
OOD statistics attached and without them (the same loaded model, `attach_ood(None)`), in one run.

Concurrency C is modelled as what the batcher forms from C concurrent one-text requests: batches of C items
(docs/architecture.md §6). The two configurations alternate repeat by repeat (the order flips each time) and the
best pass of each counts, so load from other processes on a shared CPU hits both alike. Everything the OOD score
adds (pooling the captured hidden state, the distance to the bank or the Gaussian, the extra pass where one is
needed) happens inside `predict`, so the ratio here is the largest it can be per request: HTTP and queueing add the
same time to both.

    python -m bench.ood_cost --artifact artifacts/sentiment/<version> [--concurrency 32] [--texts 256] \
        [--mc-samples 0] [--repeats 5] [--threads 1]

Prints one JSON line: items/s with and without, and `cost_ratio` = time with / time without (issue 13 asks ≤ 1.10).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.texts import reviews, verses
from models.core.predictor import MCRequest, Predictor, PredictorOptions, PreparedItem
from models.registry import load_predictor

TEXTS = {"sentiment": reviews, "translation": verses, "generation": reviews}
PARAMETERS: dict[str, dict[str, Any]] = {"translation": {"max_new_tokens": 32}, "generation": {"max_new_tokens": 16}}


def timed_pass(predictor: Predictor, batches: Sequence[Sequence[PreparedItem]], mc_samples: int) -> float:
    """Seconds to predict every batch once (seed fixed, so both configurations do the same work)."""
    started = time.perf_counter()
    for batch in batches:
        predictor.predict(batch, [MCRequest(mc_samples, 1)] * len(batch))
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ood_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True, help="an artifact directory with OOD statistics")
    parser.add_argument("--concurrency", type=int, default=32, help="items per batch (concurrent requests)")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--mc-samples", type=int, default=0, help="T (0: a deterministic request)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per configuration; the best counts")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor: Any = load_predictor(args.artifact, PredictorOptions(device="cpu", dtype=args.dtype))
    detector = predictor.ood
    if detector is None:
        raise SystemExit(f"{args.artifact} has no OOD statistics: fit them with python -m training.ood")
    task = predictor.task
    texts = TEXTS[task](args.texts, seed=0)
    items = [predictor.prepare(text, PARAMETERS.get(task, {})) for text in texts]
    batches = [items[i: i + args.concurrency] for i in range(0, len(items), args.concurrency)]
    best = {"with": float("inf"), "without": float("inf")}
    for attached in (detector, None):  # one untimed pass of each
        predictor.attach_ood(attached)
        timed_pass(predictor, batches, args.mc_samples)
    for repeat in range(args.repeats):
        for name in (("with", "without") if repeat % 2 == 0 else ("without", "with")):
            predictor.attach_ood(detector if name == "with" else None)
            best[name] = min(best[name], timed_pass(predictor, batches, args.mc_samples))
    print(json.dumps({
        "task": task, "artifact": str(args.artifact), "method": detector.method, "layer": detector.layer,
        "concurrency": args.concurrency, "texts": len(items), "mc_samples": args.mc_samples,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "items_per_s": {name: round(len(items) / seconds, 2) for name, seconds in best.items()},
        "cost_ratio": round(best["with"] / best["without"], 4),
    }))


if __name__ == "__main__":
    main()
