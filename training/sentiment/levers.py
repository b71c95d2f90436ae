"""Does MC dropout earn its place? The levers on a sentiment artifact, chosen on validation, confirmed on test.

    python -m training.sentiment.levers --artifact artifacts/sentiment/VERSION [--rates 0.05,0.1,0.2,0.3]

The artifact's own job plan (its manifest's config and seeds) rebuilds the same IMDB (or synthetic) splits and
parts, so:
- choices are made on the validation `selection_modes` reviews (nested in the selection part; never the
  calibration part, never test), and the same comparison is then read once on the test `test_modes` reviews;
- the baseline is the deterministic pass's 1 − max softmax probability (MSP);
- the levers: the inference dropout rate at the served MC sites and last-k (`--rates`, `--last-k`; T = the
  artifact's default), each with every MC measure; and HUQ-style hybrids (Vazhentsev et al. 2023): a rank blend
  α·rank(1 − MSP) + (1 − α)·rank(OOD score) of the deterministic pass, α on a grid chosen on validation (when
  the artifact has an OOD detector);
- the measure of quality is misclassification AUROC (errors of the served label).
Prints the table (lever × measure: validation AUROC, test AUROC, cost relative to the deterministic pass) and
writes it as JSON (`--json-out`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import training.core.scoring as metrics
from models.core.artifacts import read_manifest
from models.core.predictor import MCRequest, PredictorOptions, PreparedItem
from models.sentiment.encoders import family_of
from models.sentiment.predictor import SentimentPredictor
from training.core.classification_metrics import uncertainty_scores
from training.core.config import recorded_config
from training.core.progress import ProgressLog
from training.sentiment.config import SentimentConfig
from training.sentiment.data import plan_subsets
from training.sentiment.job import DATASETS
from training.sentiment.modes import DETERMINISTIC, Encoded, EvalSettings, MCMode, collect_logits

log = logging.getLogger(__name__)
ALPHAS = tuple(i / 10 for i in range(11))


def set_inference_rate(model: nn.Module, rate: float) -> None:
    """Every dropout the fast MC path reads (config rates of the live sites, the head's module) set to `rate`."""
    family = family_of(model)
    if family is None:
        raise ValueError("levers need a fast-path encoder (BERT, RoBERTa, DistilBERT)")
    hidden_key = next(iter(family.dropout_config(0.0, 0.0)))  # the family's name for the hidden rate
    setattr(model.config, hidden_key, rate)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate


def rank(scores: torch.Tensor) -> torch.Tensor:
    """Ranks in [0, 1] (ties broken by position; only the order matters for AUROC)."""
    order = torch.argsort(torch.argsort(scores.double()))
    return order.double() / max(len(scores) - 1, 1)


def aurocs(scores: dict[str, torch.Tensor], errors: torch.Tensor) -> dict[str, float]:
    return {name: float(metrics.misclassification_auroc(s, errors)) for name, s in scores.items()}


def ood_scores(predictor: SentimentPredictor, ids: Sequence[Sequence[int]], phase: str) -> torch.Tensor:
    """The served `ood_score` of each review: the server's own deterministic predict (T = 0) in batches of 32."""
    items = [PreparedItem(text="", input_ids=tuple(i), n_tokens=len(i)) for i in ids]
    out: list[float] = []
    with ProgressLog(f"{phase}/ood_score", len(items), unit="reviews") as progress:
        for start in range(0, len(items), 32):
            batch = items[start: start + 32]
            out += [p.ood_score for p in predictor.predict(batch, [MCRequest(0, 0)] * len(batch))]
            progress.update(len(batch))
    return torch.tensor(out, dtype=torch.float64)


def evaluate(predictor: SentimentPredictor, data: Encoded, rates: Sequence[float], ks: Sequence[int],
             s: EvalSettings, phase: str) -> dict[str, dict[str, float]]:
    """AUROC of every lever × measure on `data` (errors of the deterministic label for the baseline and hybrids,
    of the MC mean's label for each MC mode), and each mode's seconds per review."""
    model = predictor.model
    det_logits, det_seconds = collect_logits(model, data, predictor.tokenizer.pad_token_id, DETERMINISTIC, s, phase)
    det_probs = torch.softmax(det_logits.double(), dim=-1)
    det_errors = det_probs.mean(dim=1).argmax(dim=1) != data.labels
    msp = uncertainty_scores(det_probs)["one_minus_confidence"]
    table: dict[str, dict[str, float]] = {"deterministic/msp": {"auroc": aurocs({"m": msp}, det_errors)["m"],
                                                                "cost": 1.0}}
    if predictor.ood is not None:  # the hybrid needs the artifact's detector
        ood = ood_scores(predictor, data.ids, phase)
        for alpha in ALPHAS:
            blend = alpha * rank(msp) + (1 - alpha) * rank(ood)
            table[f"hybrid/alpha_{alpha:g}"] = {"auroc": aurocs({"m": blend}, det_errors)["m"], "cost": 1.0}
    trained = predictor.rates.hidden
    for rate in rates:
        set_inference_rate(model, rate)
        for k in ks:
            mode = MCMode(f"mc_last_{k}_p{rate:g}", s.mc_samples, k)
            logits, seconds = collect_logits(model, data, predictor.tokenizer.pad_token_id, mode, s, phase)
            probs = torch.softmax(logits.double(), dim=-1)
            errors = probs.mean(dim=1).argmax(dim=1) != data.labels
            for measure, value in aurocs(uncertainty_scores(probs), errors).items():
                table[f"{mode.name}/{measure}"] = {"auroc": value, "cost": seconds / det_seconds}
    set_inference_rate(model, trained)
    return table


def plan(artifact: Path, cache_dir: Path) -> tuple[SentimentConfig, Any, Any]:
    """The artifact's job config, its data (IMDB or synthetic) and the job's subsets (same seeds: the same parts)."""
    config = recorded_config(SentimentConfig, read_manifest(artifact).training_config)
    if config.data not in ("imdb", "synthetic"):
        raise ValueError(f"{artifact}: trained on {config.data!r}; levers rebuild the built-in corpora's splits only")
    data = DATASETS[config.data](config, cache_dir)
    return config, data, plan_subsets(data, config.subset_sizes(), config.split_seed + 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sentiment.levers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--rates", default="0.05,0.1,0.2,0.3", help="inference dropout rates (comma-separated)")
    parser.add_argument("--last-k", default="1", help="stochastic top layers (comma-separated)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    config, data, subsets = plan(args.artifact, args.cache_dir)
    predictor = SentimentPredictor.load(args.artifact, PredictorOptions())
    s = EvalSettings(mc_samples=predictor.default_mc_samples, last_k_candidates=(), sites=predictor.sites,
                     target_risk=config.target_risk, tolerance=0.0, batch_rows=config.eval_batch_rows,
                     seed=config.seed, device=torch.device("cpu"), dtype="float32")

    def encoded(part: str, positions: list[int]) -> Encoded:
        split = subsets.part(data, part)
        ids = [predictor.prepare(split.texts[i], {}).input_ids for i in positions]
        return Encoded([list(i) for i in ids], torch.tensor([split.labels[i] for i in positions]))

    rates = [float(r) for r in args.rates.split(",")]
    ks = [int(k) for k in args.last_k.split(",")]
    validation = evaluate(predictor, encoded("selection", subsets.selection_modes), rates, ks, s, "validation")
    choice = max(validation, key=lambda name: validation[name]["auroc"])
    test = evaluate(predictor, encoded("headline", subsets.test_modes), rates, ks, s, "test")
    rows = {name: {"validation_auroc": validation[name]["auroc"], "test_auroc": test[name]["auroc"],
                   "cost": test[name]["cost"]} for name in validation}
    print(f"{'lever/measure':<46} {'val AUROC':>9} {'test AUROC':>10} {'cost':>6}")
    for name, row in rows.items():
        mark = "  ← chosen on validation" if name == choice else ""
        print(f"{name:<46} {row['validation_auroc']:9.4f} {row['test_auroc']:10.4f} {row['cost']:6.2f}{mark}")
    baseline = rows["deterministic/msp"]
    print(f"chosen {choice}: test AUROC {rows[choice]['test_auroc']:.4f} vs MSP {baseline['test_auroc']:.4f} "
          f"({rows[choice]['test_auroc'] - baseline['test_auroc']:+.4f}); {len(subsets.selection_modes)} validation "
          f"and {len(subsets.test_modes)} test reviews, T = {s.mc_samples}, {time.perf_counter() - started:.0f} s")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"choice": choice, "rows": rows, "artifact": str(args.artifact),
                                             "validation_n": len(subsets.selection_modes),
                                             "test_n": len(subsets.test_modes)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
