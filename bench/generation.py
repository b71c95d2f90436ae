"""Generation: tokens/s with the KV cache vs without, batched vs one request at a time, and what the
MC-dropout uncertainty pass costs on top of the generation.

All through the serving code (models/generation/predictor.py, models/generation/decode.py) on one artifact, greedy with
a fixed number of new tokens (no end-of-sequence stop, so every run decodes the same amount):
- cache vs no cache: `decode_batch(use_cache=True|False)` at batch 1 (the no-cache side recomputes the
  whole prefix at every step, as a server without a KV cache would);
- batched vs single: `--batch` requests in one `predict` vs the same requests one by one (T = 0);
- uncertainty: `predict` with T = the artifact's default vs T = 0 on the same batch (one extra
  teacher-forced pass of the top k layers over T rows).
Each timing is the median of `--repeats` runs after one untimed warm-up. Ratios, measured in one run on
one machine, are the claim.

    python -m bench.generation --artifacts-dir artifacts [--batch 4] [--new-tokens 48] [--mc-samples 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from models.core.artifacts import resolve_artifact
from models.core.predictor import MCRequest, PredictorOptions
from models.generation.decode import decode_batch
from models.generation.predictor import GenerationPredictor
from models.generation.sampling import SamplingParams

PROMPTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    "The evening was fine, and the whole party walked down to the village",
    "She had never seen a place for which nature had done more",
    "Mr. Bennet was among the earliest of those who waited on Mr. Bingley",
    "Her mother could not be prevailed upon to stay at home",
    "The letter was delivered to her the next morning",
    "They were soon joined by the younger sisters",
    "Nothing could be more agreeable than the prospect of a ball",
]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: kernels and caches for these shapes
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--mc-samples", type=int, default=None, help="T (default: the artifact's)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-words", type=int, default=None, help="cut prompts to this many words")
    args = parser.parse_args(argv)

    artifact = resolve_artifact(args.artifacts_dir, "generation")
    predictor = GenerationPredictor.load(artifact, PredictorOptions(device="cpu", dtype=args.dtype))
    samples = args.mc_samples or predictor.default_mc_samples
    n = args.new_tokens
    parameters = {"max_new_tokens": n, "temperature": 0.0, "repetition_penalty": 1.0}
    prompts = [" ".join(p.split()[: args.prompt_words]) for p in PROMPTS]
    items = [predictor.prepare(prompts[i % len(prompts)], parameters) for i in range(args.batch)]
    print(f"{artifact.name}: {predictor.describe()['parameters'] / 1e6:.1f} M parameters, "
          f"dtype {predictor.options.dtype}, {n} new tokens, batch {args.batch}, T={samples}, "
          f"last-k {predictor.last_k}, torch threads {torch.get_num_threads()}")

    never = frozenset({-1})  # no end-of-sequence: every run decodes exactly n tokens
    greedy = SamplingParams(max_new_tokens=n)

    def decode(use_cache: bool, batch: int) -> None:
        with torch.inference_mode():
            decode_batch(predictor.model, predictor.tokenizer, [item.input_ids for item in items[:batch]],
                         [greedy] * batch, [0] * batch, eos_ids=never, pad_id=predictor.pad_id, use_cache=use_cache)

    cached = median_seconds(lambda: decode(True, 1), args.repeats)
    uncached = median_seconds(lambda: decode(False, 1), args.repeats)
    print(f"KV cache, batch 1:        {n / cached:8.1f} tokens/s with, {n / uncached:8.1f} without "
          f"→ {uncached / cached:.2f}x")

    predictor.eos_ids = never  # the predictor too decodes exactly n tokens in every run below
    single = median_seconds(lambda: [predictor.predict([item], [MCRequest(0, 1)]) for item in items], args.repeats)
    batched = median_seconds(lambda: predictor.predict(items, [MCRequest(0, 1)] * len(items)), args.repeats)
    total = n * len(items)
    print(f"batched vs single (T=0):  {total / batched:8.1f} tokens/s batched, {total / single:8.1f} one by one "
          f"→ {single / batched:.2f}x")

    with_mc = median_seconds(lambda: predictor.predict(items, [MCRequest(samples, 1)] * len(items)), args.repeats)
    print(f"uncertainty pass (T={samples}): {with_mc:.2f} s vs {batched:.2f} s without "
          f"→ {with_mc / batched:.2f}x the generation (target ≤ 1.5x)")
    alone = median_seconds(lambda: predictor.predict(items[:1], [MCRequest(samples, 1)]), args.repeats)
    plain = median_seconds(lambda: predictor.predict(items[:1], [MCRequest(0, 1)]), args.repeats)
    print(f"uncertainty pass, batch 1: {alone:.2f} s vs {plain:.2f} s → {alone / plain:.2f}x")


if __name__ == "__main__":
    main()
