"""`python -m training.translation.levers --artifact artifacts/translation/<version> [--cache-dir .cache]
[--lever NAME=SPEC ...] [--dtype auto] [--json-out FILE]`: the MC-dropout levers of a translation artifact,
compared on its own job's validation verses (does MC earn its place over the deterministic TP per token?).

The job chooses only last-k, by PRR (training/core/sequence_choices.py); this compares the other levers too, at
the artifact's τ, on the same verses: the manifest's training config re-reads the job's data and cuts the same
held-out parts (job.held_out_parts).
1. The `validation_calibration` verses (what the job chose last-k and τ on) are decoded once, greedy at T = 0
   (the decode does not depend on a lever), and scored by sentence chrF against their references.
2. Each lever scores those outputs through the serving predictor's `score` under its masks. A SPEC
   (training/core/levers.py) is comma-separated `key=value`s over the artifact's serving defaults: `T` (masks),
   `k` (last-k; `all` = the whole model, embeddings included), `rate` (every non-zero dropout rate of the model's
   config set to it, for this comparison only; `job` = the trained rates) and `sites` (`+`-joined, e.g.
   `hidden+attention`). Per lever:
   Pearson / Spearman of every sequence measure with sentence chrF, and the seconds the scoring took.
3. The lever whose D-TP per token has the largest validation Pearson is chosen; only it reads the test verses the
   job reported on (TP per token from the same pass, the deterministic baseline, beside it).
Prints a Markdown table (lever × measure: validation Pearson; seconds) and the test line; `--json-out` keeps all.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from training.core.config import recorded_config
from training.core.levers import Lever, emit, lever_parser, load_levers
from training.core.predicting import predict_all, prepare_all, rebuilt, score_all
from training.core.sequence_quality import measure_table
from training.core.uncertainty_stats import correlation_table
from training.translation.config import TranslationConfig
from training.translation.evaluation import sentence_chrf
from training.translation.job import DATASETS, TASK, held_out_parts
from training.translation.report import ORIENTATION

log = logging.getLogger(__name__)
DEFAULT_LEVERS = {
    "served": "", "last-3": "k=3", "whole": "k=all", "whole, T=30": "k=all,T=30",
    "whole, p=0.05": "k=all,rate=0.05", "whole, p=0.02": "k=all,rate=0.02",
    "whole, +attention": "k=all,sites=hidden+attention",
}
RATE_FIELDS = ("dropout", "activation_dropout", "attention_dropout", "recurrent_dropout")  # Marian and the RNN
SHOWN = {"TP/tok": "sequence_log_prob_per_token", "D-TP/tok": "mc_log_prob_mean_per_token",
         "D-Var/tok": "mc_log_prob_var_per_token", "entropy": "mean_token_entropy",
         "MI": "mean_token_mutual_information"}
BASELINE, CHOSEN_BY = "sequence_log_prob_per_token", "mc_log_prob_mean_per_token"


@contextmanager
def inference_rate(model: Any, rate: float | None) -> Iterator[None]:
    """Every non-zero dropout rate of `model.config` set to `rate` inside the block (the MC code reads them from the
    config at each call), restored after it; None changes nothing."""
    saved = {name: getattr(model.config, name) for name in RATE_FIELDS if getattr(model.config, name, 0.0)}
    try:
        if rate is not None:
            for name in saved:
                setattr(model.config, name, rate)
        yield
    finally:
        for name, value in saved.items():
            setattr(model.config, name, value)


def held_out(predictor: Any, pairs: Sequence[tuple[str, str]], seed: int, batch_size: int,
             phase: str) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
    """(source ids, greedy output ids, sentence chrF [N]) of the pairs the server accepts."""
    items, kept = prepare_all(predictor, [p[0] for p in pairs], {})
    decoded = predict_all(predictor, items, 0, seed, batch_size, f"{phase}: greedy decoding")
    chrf = sentence_chrf([d.translation for d in decoded], [pairs[i][1] for i in kept])
    return [item.input_ids for item in items], [d.output_ids for d in decoded], chrf


def evaluate(predictor: Any, lever: Lever, part: tuple[list[list[int]], list[list[int]], torch.Tensor], seed: int,
             batch_size: int, phase: str) -> dict[str, Any]:
    """{"seconds", "correlation_with_sentence_chrf": {measure: {pearson, spearman, expected_sign}}} of one lever."""
    sources, outputs, chrf = part
    served = rebuilt(predictor, last_k=lever.last_k or predictor.num_layers, sites=lever.sites)
    started = time.perf_counter()
    with inference_rate(predictor.model, lever.rate):
        uncertainties = score_all(served, sources, outputs, lever.samples, seed, batch_size, phase,
                                  lambda _, scored: scored.uncertainty)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2),
            "correlation_with_sentence_chrf": correlation_table(measure_table(uncertainties), chrf, ORIENTATION)}


def compare(predictor: Any, parts: Mapping[str, Sequence[tuple[str, str]]], levers: Mapping[str, Lever], seed: int,
            batch_size: int) -> dict[str, Any]:
    """Steps 1–3 of the module docstring: {"validation": {lever: result}, "chosen", "test": result, sizes}."""
    validation = held_out(predictor, parts["validation_calibration"], seed, batch_size, "validation")
    table = {name: evaluate(predictor, lever, validation, seed + 1, batch_size, f"validation: {name}")
             for name, lever in levers.items()}
    chosen = max(table, key=lambda name: table[name]["correlation_with_sentence_chrf"][CHOSEN_BY]["pearson"])
    log.info("validation chose %r (D-TP per token Pearson %.4f)", chosen,
             table[chosen]["correlation_with_sentence_chrf"][CHOSEN_BY]["pearson"])
    test = held_out(predictor, parts["test"], seed, batch_size, "test")
    return {"validation": table, "chosen": chosen, "chosen_by": f"largest validation Pearson of {CHOSEN_BY}",
            "levers": {name: dataclasses.asdict(lever) | {"sites": sorted(lever.sites)} for name, lever in
                       levers.items()},
            "test": evaluate(predictor, levers[chosen], test, seed + 2, batch_size, f"test: {chosen}"),
            "n": {"validation": len(validation[0]), "test": len(test[0])}}


def markdown(result: Mapping[str, Any]) -> str:
    """The validation table (Pearson with sentence chrF per shown measure, seconds) and the chosen lever's test line."""
    head = "| lever | " + " | ".join(SHOWN) + " | seconds |"
    rows = [head, "|" + "---|" * (len(SHOWN) + 2)]
    for name, row in result["validation"].items():
        corr = row["correlation_with_sentence_chrf"]
        rows.append(f"| {name} | " + " | ".join(f"{corr[m]['pearson']:.4f}" for m in SHOWN.values())
                    + f" | {row['seconds']:.1f} |")
    test = result["test"]["correlation_with_sentence_chrf"]
    rows.append(f"\nvalidation chose {result['chosen']!r}; on the {result['n']['test']} test verses: D-TP per token "
                f"{test[CHOSEN_BY]['pearson']:.4f} (Spearman {test[CHOSEN_BY]['spearman']:.4f}) vs TP per token "
                f"{test[BASELINE]['pearson']:.4f} ({test[BASELINE]['spearman']:.4f})")
    return "\n".join(rows)


def plan(manifest_config: Mapping[str, Any], cache_dir: Path) -> tuple[TranslationConfig, dict[str, Any]]:
    """The job's TranslationConfig from the manifest's training config (keys the class does not know are dropped)
    and the held-out parts it cut (job.held_out_parts) from its data, re-read."""
    config = recorded_config(TranslationConfig, manifest_config)
    return config, held_out_parts(config, DATASETS[config.data](config, cache_dir))


def main(argv: Sequence[str] | None = None) -> int:
    parser = lever_parser("python -m training.translation.levers", __doc__.split("\n\n")[0], DEFAULT_LEVERS)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    predictor, levers = load_levers(parser, args, TASK, DEFAULT_LEVERS)
    config, parts = plan(predictor.manifest.training_config, args.cache_dir)
    result = compare(predictor, parts, levers, config.seed, args.batch_size) | {
        "artifact": str(args.artifact), "dtype": predictor.options.dtype,
        "temperature": predictor.calibration.temperature}
    emit(result, markdown(result), args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
