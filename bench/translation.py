"""Translation: what the MC-dropout uncertainty pass costs on top of the deterministic translation.

For each last-k setting (k decoder layers under dropout; k = L is full MC) it times the same Bible-style
sentences through `predictor.predict` at one batch size:
- deterministic: greedy decode with the KV cache, `mc_samples=0` (no scoring pass at all);
- scoring: the same decode + ONE teacher-forced pass under T masks (token and sequence uncertainty);
- sampling: scoring + T stochastic decodes and their pairwise chrF (`uncertainty_mode: sampling`),
and prints items/s and the ratio to deterministic. Each configuration runs once untimed (warm-up for the
shapes) and then `--repeats` times timed; the median is reported. Ratios, not absolute numbers, are the
claim: they are measured in one run on one machine.

    python -m bench.translation --artifacts-dir artifacts [--texts 32] [--batch 8] [--mc-samples 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.texts import verses
from models.core.artifacts import resolve_artifact
from models.core.predictor import MCRequest, Predictor, PredictorOptions, PreparedItem
from models.registry import load_predictor


def seconds(predictor: Predictor, batches: Sequence[Sequence[PreparedItem]], mc_samples: int, repeats: int) -> float:
    """Median wall time of predicting every batch once (after one untimed warm-up pass)."""
    runs = []
    for attempt in range(repeats + 1):
        started = time.perf_counter()
        for batch in batches:
            predictor.predict(batch, [MCRequest(mc_samples, 7)] * len(batch))
        if attempt:
            runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.translation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mc-samples", type=int, default=None, help="T (default: the artifact's)")
    parser.add_argument("--last-k", default=None, help="comma-separated k values (default: 1..L)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--sampling", action="store_true", help="also time uncertainty_mode=sampling")
    args = parser.parse_args(argv)

    artifact = resolve_artifact(args.artifacts_dir, "translation")
    base = load_predictor(artifact, PredictorOptions(device="cpu", dtype=args.dtype))
    layers = base.describe()["num_layers"]["decoder"]
    ks = [int(k) for k in args.last_k.split(",")] if args.last_k else list(range(1, layers + 1))
    samples = args.mc_samples or base.default_mc_samples
    texts = verses(args.texts, seed=0)
    print(f"{artifact.name}: {len(texts)} sentences, batch {args.batch}, T={samples}, dtype {base.options.dtype}, "
          f"max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")

    def batches_for(predictor: Predictor, mode: str) -> list[list[PreparedItem]]:
        parameters = {"max_new_tokens": args.max_new_tokens, "uncertainty_mode": mode}
        items = sorted((predictor.prepare(text, parameters) for text in texts), key=lambda item: item.n_tokens)
        return [items[i: i + args.batch] for i in range(0, len(items), args.batch)]

    deterministic = seconds(base, batches_for(base, "scoring"), 0, args.repeats)
    print(f"{'mode':>22} {'items/s':>8} {'× deterministic':>16}")
    print(f"{'deterministic':>22} {len(texts) / deterministic:8.2f} {1.0:16.2f}")
    modes = ["scoring", "sampling"] if args.sampling else ["scoring"]
    for k in ks:
        predictor = load_predictor(artifact, PredictorOptions(device="cpu", dtype=args.dtype, mc_last_k=k))
        for mode in modes:
            took = seconds(predictor, batches_for(predictor, mode), samples, args.repeats)
            label = f"{mode} last-{k}" + (" (full)" if k >= layers else "")
            print(f"{label:>22} {len(texts) / took:8.2f} {took / deterministic:16.2f}")


if __name__ == "__main__":
    main()
