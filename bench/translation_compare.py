"""Translation architectures side by side: each artifact's own report (quality, uncertainty, OOD) next to its
latency and MC cost, timed here in ONE run on the same sentences.

For every `--artifact` (a translation artifact directory: Transformer, RNN, ...):
- from its manifest, as its job measured them on the test verses: BLEU and chrF greedy and beam (sacrebleu
  signatures), training steps and seconds, Pearson / Spearman with sentence chrF of TP per token
  (`sequence_log_prob_per_token`), D-TP per token (`mc_log_prob_mean_per_token`), mean token entropy and token
  MI, and the OOD detector's test AUROC;
- timed now (`bench/translation.py`'s `seconds`: one warm-up pass, median of `--repeats`): greedy latency per
  sentence at batch 1, items/s at `--batch`, and the served uncertainty pass (decode + one teacher-forced MC
  pass at the artifact's T and last-k) against the deterministic decode at `--batch`;
- parameters, counted from the loaded model.
Prints a Markdown table (one column per artifact); `--json-out` keeps every figure.

    python -m bench.translation_compare --artifact artifacts/translation/V1 --artifact artifacts/translation-rnn/V2
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.texts import verses
from bench.translation import seconds
from models.core.artifacts import read_manifest
from models.core.predictor import Predictor, PredictorOptions, PreparedItem
from models.registry import load_predictor

MEASURES = {"TP per token": "sequence_log_prob_per_token", "D-TP per token": "mc_log_prob_mean_per_token",
            "mean token entropy": "mean_token_entropy", "mean token MI": "mean_token_mutual_information"}


def timings(predictor: Predictor, texts: Sequence[str], batch: int, repeats: int, max_new_tokens: int
            ) -> dict[str, float]:
    """Greedy latency at batch 1 (ms per sentence), items/s at `batch`, and the MC scoring pass's cost ratio."""
    items = sorted((predictor.prepare(t, {"max_new_tokens": max_new_tokens}) for t in texts),
                   key=lambda item: item.n_tokens)

    def chunks(size: int) -> list[list[PreparedItem]]:
        return [items[i: i + size] for i in range(0, len(items), size)]

    single = seconds(predictor, chunks(1), 0, repeats)
    deterministic = seconds(predictor, chunks(batch), 0, repeats)
    scored = seconds(predictor, chunks(batch), predictor.default_mc_samples, repeats)
    return {"latency_ms_batch_1": 1000 * single / len(items), f"items_per_s_batch_{batch}": len(items) / deterministic,
            "mc_cost_ratio": scored / deterministic}


def report_of(artifact: Path) -> dict[str, Any]:
    """The figures the job recorded in the manifest (see module docstring)."""
    manifest = read_manifest(artifact)
    metrics, config = manifest.metrics or {}, manifest.training_config or {}
    quality = metrics.get("quality", {})
    correlations = metrics.get("uncertainty", {}).get("correlation_with_sentence_chrf", {})
    training = metrics.get("training", {})
    ood = metrics.get("ood", {})
    return {
        "name": manifest.model_name, "version": manifest.version, "arch": config.get("arch") or "transformer",
        "model_class": manifest.model_class, "steps": training.get("steps"),
        "train_seconds": training.get("train_seconds"),
        "test_verses": metrics.get("test_n"),
        **{f"{mode} {score}": quality.get(mode, {}).get(score) for mode in ("greedy", "beam4")
           for score in ("bleu", "chrf")},
        "signatures": {score: quality.get("greedy", {}).get(f"{score}_signature") for score in ("bleu", "chrf")},
        **{f"{label} pearson / spearman": (correlations.get(key, {}).get("pearson"),
                                           correlations.get(key, {}).get("spearman"))
           for label, key in MEASURES.items()},
        "ood": (f"{ood['test']['auroc']:.3f} ({ood['chosen']['candidate']})" if ood.get("test") else None),
        "mc": f"T = {manifest.default_mc_samples}, last-{manifest.dropout.get('mc_last_k')}",
    }


def cell(value: Any) -> str:
    if isinstance(value, tuple):
        return " / ".join(cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "–" if value is None else str(value)


def table(columns: list[dict[str, Any]]) -> str:
    rows = [key for key in columns[0] if key != "signatures"]
    lines = ["| | " + " | ".join(f"{c['name']} ({c['arch']})" for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {row} | " + " | ".join(cell(c.get(row)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.translation_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    texts = verses(args.texts, seed=0)
    columns = []
    for artifact in args.artifact:
        predictor = load_predictor(artifact, PredictorOptions(device="cpu", dtype="float32"))
        parameters = sum(p.numel() for p in predictor.model.parameters())
        column = {**report_of(artifact), "parameters (M)": parameters / 1e6,
                  **timings(predictor, texts, args.batch, args.repeats, args.max_new_tokens)}
        columns.append(column)
        print(f"{artifact}: timed on {len(texts)} sentences, {torch.get_num_threads()} torch threads", flush=True)
    print(table(columns))
    print("signatures: " + json.dumps(columns[0]["signatures"]))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(columns, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
