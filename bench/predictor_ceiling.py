"""In-process ceiling of batching and of the backends: items/s of `predictor.predict` alone (no HTTP, no queue).

Separates what the model can gain from batching from what the HTTP stack costs: for each configuration
(backend × dtype) and T, it times the same texts at batch size 1, at the batch size in arrival order, and
length-sorted, and prints the batching ratios; with more than one configuration, also each one's speed-up
over the first (e.g. onnxruntime over torch), measured in the same run. Configurations are timed back to back
for each shape, best of `--repeats` timed passes after one untimed pass, so load from other processes on a
shared CPU hits all of them alike.

    python -m bench.predictor_ceiling --artifacts-dir artifacts [--texts 512] [--batch 32] [--dtypes bfloat16,float32]
    python -m bench.predictor_ceiling --backends torch,onnxruntime --dtypes float32 --threads 1 \
        [--version V] [--onnx-model package/model.int8.onnx]

A backend `onnxruntime@PATH` runs the graph at PATH (e.g. `onnxruntime@exports/…/model.int8.onnx`), so the
float32 and int8 graphs can be timed against torch in one run; plain `onnxruntime` takes `--onnx-model`, or
exports the graph at load.
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

MODES = ("bs=1", "arrival", "sorted")


def items_per_second(predictor: Predictor, batches: Sequence[Sequence[PreparedItem]], mc_samples: int,
                     repeats: int = 1) -> float:
    """Run every batch once to warm up, then time `repeats` passes; returns the best pass's items per second."""
    for batch in batches:
        predictor.predict(batch, [MCRequest(mc_samples, 1)] * len(batch))
    count = sum(len(batch) for batch in batches)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            predictor.predict(batch, [MCRequest(mc_samples, 1)] * len(batch))
        best = min(best, time.perf_counter() - started)
    return count / best


def options(backend: str, dtype: str, onnx_model: str | None) -> PredictorOptions:
    """CPU options of one configuration: `torch`, `onnxruntime` (graph: `onnx_model`) or `onnxruntime@PATH`."""
    name, _, path = backend.partition("@")
    graph = (path or onnx_model) if name != "torch" else None
    return PredictorOptions(device="cpu", dtype=dtype, backend=name, onnx_model=graph)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.predictor_ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--version", default=None, help="artifact version (default: the newest)")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--dtypes", default="bfloat16,float32", help="torch dtypes (onnxruntime runs float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    parser.add_argument("--backends", "--backend", default="torch",
                        help="comma list of torch, onnxruntime; ratios are over the first configuration")
    parser.add_argument("--onnx-model", default=None, help="onnxruntime: an exported graph, e.g. an int8 one")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per shape; the best one counts")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # the onnxruntime predictor takes its intra-op threads from torch's

    artifact = resolve_artifact(args.artifacts_dir, args.task, args.version)
    texts = reviews(args.texts, seed=0)
    configs = [(backend, dtype) for backend in args.backends.split(",")
               for dtype in (args.dtypes.split(",") if backend == "torch" else ["float32"])]
    predictors = {config: load_predictor(artifact, options(config[0], config[1], args.onnx_model))
                  for config in configs}
    for predictor in predictors.values():
        predictor.warmup()
    items = [predictors[configs[0]].prepare(text, {}) for text in texts]  # tokenising is the same on every backend
    pools = {"bs=1": [[item] for item in items],
             "arrival": [items[i : i + args.batch] for i in range(0, len(items), args.batch)],
             "sorted": (lambda s: [s[i : i + args.batch] for i in range(0, len(s), args.batch)])(
                 sorted(items, key=lambda item: item.n_tokens))}
    print(f"{artifact.name}: {args.texts} texts, batch {args.batch}, threads {torch.get_num_threads()}, "
          f"best of {args.repeats}")
    width = max(12, *(len(backend) for backend, _ in configs))
    print(f"{'backend':{width}} {'dtype':9} {'T':>3} {'bs=1':>8} {'arrival':>8} {'sorted':>8}   ratios (items/s)")
    for mc_samples in (0, args.mc_samples):
        rates = {config: {mode: 0.0 for mode in MODES} for config in configs}
        for mode in MODES:
            for config, predictor in predictors.items():
                rates[config][mode] = items_per_second(predictor, pools[mode], mc_samples, args.repeats)
        for (backend, dtype), rate in rates.items():
            print(f"{backend:{width}} {dtype:9} {mc_samples:>3} {rate['bs=1']:8.1f} {rate['arrival']:8.1f} "
                  f"{rate['sorted']:8.1f}   {rate['arrival'] / rate['bs=1']:.2f}x arrival, "
                  f"{rate['sorted'] / rate['bs=1']:.2f}x sorted")
        base = rates[configs[0]]
        for config in configs[1:]:
            ratios = ", ".join(f"{mode} {rates[config][mode] / base[mode]:.2f}x" for mode in MODES)
            print(f"  speed-up of {'/'.join(config)} over {'/'.join(configs[0])} at T = {mc_samples}: {ratios}")


if __name__ == "__main__":
    main()
