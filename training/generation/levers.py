"""`python -m training.generation.levers --artifact artifacts/generation/<version> [--cache-dir .cache]
[--lever NAME=SPEC ...] [--blocks 16] [--dtype auto] [--json-out FILE]`: the MC-dropout levers of a generation
artifact, compared on its own job's validation blocks (does MC earn its place over the deterministic 1 − p?).

The job chooses only last-k, by PRR (training/core/sequence_choices.py); this compares the other levers too, on
next-token errors: the manifest's training config re-reads the job's corpus, cuts the same blocks and the same
held-out parts (job.held_out_blocks), with the artifact's own tokenizer.
1. `--blocks` blocks of the `validation_calibration` part (what the job chose last-k and τ on) are scored
   teacher-forced under each lever through the serving predictor's `score` (evaluation.token_report): at every
   position the deterministic greedy token against the true next token, and the AUROC of every token measure for
   that error (`one_minus_p`, the deterministic baseline, and the MC measures), with the seconds it took. A SPEC
   (training/core/levers.py): `T`, `k` (last-k; `all` = every layer with dropout), `rate` (the model's non-zero
   dropout rates set to it, for this comparison only; `job` = the trained rates); `sites`: only "hidden" here.
2. The lever whose best MC measure has the largest validation AUROC is chosen; only it reads `--blocks` test
   blocks of `test_perplexity`, drawn as the job's token report drew its own (the same seeded order: 16 include the
   quick preset's 8), with `one_minus_p` from the same pass beside it.
Prints a Markdown table (lever × measure: validation AUROC; seconds) and the test line; `--json-out` keeps all.
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

from models.generation.model import LlamaDropoutRates, dropout_layers, install_dropout
from training.core.config import recorded_config
from training.core.levers import Lever, emit, lever_parser, load_levers
from training.core.predicting import rebuilt
from training.generation.batches import subset
from training.generation.config import GenerationConfig
from training.generation.evaluation import GenEvalSettings, token_report
from training.generation.job import DATASETS, TASK, eval_settings, held_out_blocks
from training.generation.split import chunk_token_ids, split_documents, token_stream

log = logging.getLogger(__name__)
DEFAULT_LEVERS = {
    "served": "", "last-2": "k=2", "whole": "k=all", "whole, T=30": "k=all,T=30",
    "whole, p=0.05": "k=all,rate=0.05", "whole, p=0.2": "k=all,rate=0.2", "whole, p=0.3": "k=all,rate=0.3",
}
MC_MEASURES = ("one_minus_p_mc", "entropy", "expected_entropy", "mi")
BASELINE = "one_minus_p"


@contextmanager
def inference_rate(model: Any, rate: float | None) -> Iterator[None]:
    """Every non-zero dropout rate of the Llama (attention, residual) set to `rate` inside the block (the hooks read
    the config at each call), restored after it, even on error; None changes nothing."""
    saved = LlamaDropoutRates.of(model)
    try:
        if rate is not None:
            install_dropout(model, rate if saved.attention else 0.0, rate if saved.hidden else 0.0)
        yield
    finally:
        install_dropout(model, saved.attention, saved.hidden)


def evaluate(predictor: Any, lever: Lever, blocks: torch.Tensor, s: GenEvalSettings, phase: str) -> dict[str, Any]:
    """token_report of one lever (`phase` names its progress lines), with "seconds" and its best MC measure."""
    served = rebuilt(predictor, last_k=lever.last_k or dropout_layers(predictor.model), sites=lever.sites)
    settings = dataclasses.replace(s, choices=dataclasses.replace(s.choices, mc_samples=lever.samples))
    started = time.perf_counter()
    with inference_rate(predictor.model, lever.rate):
        report = token_report(served, blocks, settings, phase)
    best = max(MC_MEASURES, key=lambda name: report["auroc_error"][name])
    return report | {"seconds": round(time.perf_counter() - started, 2), "best_mc_measure": best}


def compare(predictor: Any, parts: Mapping[str, torch.Tensor], levers: Mapping[str, Lever], s: GenEvalSettings,
            n_blocks: int, split_seed: int) -> dict[str, Any]:
    """Steps 1–2 of the module docstring: {"validation": {lever: report}, "chosen", "test": report, sizes}."""
    validation = subset(parts["validation_calibration"], n_blocks, split_seed + 5)
    table = {name: evaluate(predictor, lever, validation, s, f"validation: {name}") for name, lever in levers.items()}

    def best_auroc(name: str) -> float:
        return table[name]["auroc_error"][table[name]["best_mc_measure"]]

    chosen = max(table, key=best_auroc)
    log.info("validation chose %r (%s AUROC %.4f)", chosen, table[chosen]["best_mc_measure"], best_auroc(chosen))
    test = subset(parts["test_perplexity"], n_blocks, split_seed + 3)  # the job's token-report blocks
    return {"validation": table, "chosen": chosen,
            "chosen_by": "largest validation next-token error AUROC of an MC measure",
            "levers": {name: dataclasses.asdict(lever) | {"sites": sorted(lever.sites)} for name, lever in
                       levers.items()},
            "test": evaluate(predictor, levers[chosen], test, s, f"test: {chosen}"),
            "n": {"validation_blocks": len(validation), "test_blocks": len(test)}}


def markdown(result: Mapping[str, Any]) -> str:
    """The validation table (AUROC per token measure, seconds) and the chosen lever's test line."""
    shown = (BASELINE, "entropy_det", *MC_MEASURES)
    rows = ["| lever | " + " | ".join(shown) + " | seconds |", "|" + "---|" * (len(shown) + 2)]
    for name, row in result["validation"].items():
        rows.append(f"| {name} | " + " | ".join(f"{row['auroc_error'][m]:.4f}" for m in shown)
                    + f" | {row['seconds']:.1f} |")
    test = result["test"]
    measure = test["best_mc_measure"]
    rows.append(f"\nvalidation chose {result['chosen']!r}; on {test['tokens']} test tokens: {measure} "
                f"{test['auroc_error'][measure]:.4f} vs {BASELINE} {test['auroc_error'][BASELINE]:.4f}")
    return "\n".join(rows)


def plan(predictor: Any, cache_dir: Path) -> tuple[GenerationConfig, dict[str, torch.Tensor]]:
    """The job's GenerationConfig from the manifest's training config and the held-out parts it cut
    (job.held_out_blocks) from its corpus, re-read and re-tokenised. ValueError for a user's `--data file`."""
    config = recorded_config(GenerationConfig, predictor.manifest.training_config)
    if config.data not in DATASETS:
        raise ValueError(f"levers need a built-in corpus, the artifact was trained on {config.data!r}")
    corpus = DATASETS[config.data](config, cache_dir)
    split = split_documents(corpus.documents, config.validation_fraction, config.test_fraction, config.split_seed)
    tokenizer = predictor.tokenizer
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731 - the job's encoding
    blocks = {name: chunk_token_ids(token_stream(split.segments[name], encode, tokenizer.eos_token_id),
                                    config.block_size) for name in ("train", "validation", "test")}
    return config, held_out_blocks(config, blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = lever_parser("python -m training.generation.levers", __doc__.split("\n\n")[0], DEFAULT_LEVERS)
    parser.add_argument("--blocks", type=int, default=16, help="validation blocks, and test blocks, scored")
    args = parser.parse_args(argv)
    if args.blocks < 1:
        parser.error(f"--blocks {args.blocks} must be ≥ 1")
    predictor, levers = load_levers(parser, args, TASK, DEFAULT_LEVERS)
    config, parts = plan(predictor, args.cache_dir)
    s = eval_settings(config, torch.device(args.device), dropout_layers(predictor.model))
    result = compare(predictor, parts, levers, s, args.blocks, config.split_seed) | {
        "artifact": str(args.artifact), "dtype": predictor.options.dtype}
    emit(result, markdown(result), args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
