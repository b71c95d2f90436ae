"""Evaluation of the translation model through the predictor the server runs (training.core.predicting), so
every number is what a client gets: greedy decoding with the serving defaults (`max_new_tokens` default,
`forced_eos_token_id=None`), scoring mode, the predictor's own `_score` (τ, packing, per-item seeds).

Order (every choice on validation first; the test subset is read once, afterwards, for the report):
1. validation (pairs of the validation books that periodic validation did not use): greedy decodes at T = 0,
   sentence chrF against the references, then last-k, τ and the abstain rule (training.core.sequence_choices)
   with loss = 1 − chrF/100 for PRR and "bad" = chrF < `bad_chrf` as the rule's target: the kept outputs may
   hold at most `target_risk` bad ones (the largest validation coverage that does).
2. test (training/translation/report.py): the calibrated predictor on the test subset and the probes.
Sources over the served token limit would be refused (422): they are counted and left out.
`corpus_quality`, `sentence_chrf` and `distinct_output_ratio` are the quality helpers both steps use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sacrebleu.metrics import BLEU, CHRF

from training.core.predicting import predict_all, prepare_all, rebuilt
from training.core.sequence_choices import ChoiceSettings, fit_on_validation

log = logging.getLogger(__name__)
COLLAPSE_RATIO = 0.5  # below this many distinct outputs per distinct input the report flags a collapse


@dataclass(frozen=True)
class EvalSettings:
    """What the evaluation needs from the job's config; `choices` holds T, last-k, target and batching."""

    num_beams: int
    sampling_samples: int
    sampling_limit: int | None
    bad_chrf: float
    choices: ChoiceSettings


@dataclass(frozen=True)
class Evaluation:
    """The report (JSON-ready), the manifest's calibration, the serving last-k and the risk-coverage curves."""

    metrics: dict[str, Any]
    calibration: dict[str, Any]
    last_k: int
    curves: dict[str, Any]


def corpus_quality(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """sacreBLEU corpus BLEU and chrF (0–100) with their signatures."""
    bleu, chrf = BLEU(), CHRF()
    return {"bleu": bleu.corpus_score(list(hypotheses), [list(references)]).score,
            "chrf": chrf.corpus_score(list(hypotheses), [list(references)]).score,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def sentence_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> torch.Tensor:
    """Sentence-level chrF (0–100) per pair, float64 [N]."""
    chrf = CHRF()
    scores = [chrf.sentence_score(h, [r]).score for h, r in zip(hypotheses, references, strict=True)]
    return torch.tensor(scores, dtype=torch.float64)


def distinct_output_ratio(sources: Sequence[str], outputs: Sequence[str]) -> float:
    """Distinct outputs per distinct source (1.0 = every different input got a different translation). A
    collapsed model (the same output whatever the input) scores near 1/N."""
    return len(set(outputs)) / max(1, len(set(sources)))


def reference_ids(predictor: Any, targets: Sequence[str]) -> list[list[int]]:
    """Reference token ids as the decoder would produce them (`</s>` last), cut to the decode cap."""
    return [ids[: predictor.max_new_tokens_cap] for ids in predictor.tokenizer(text_target=list(targets))["input_ids"]]


def choose_on_validation(predictor: Any, pairs: Sequence[tuple[str, str]], s: EvalSettings) -> tuple[Any, dict]:
    """Step 1 of the module docstring: (Choices, report)."""
    items, kept = prepare_all(predictor, [p[0] for p in pairs], {})
    targets = [pairs[i][1] for i in kept]
    decoded = predict_all(predictor, items, 0, s.choices.seed, s.choices.batch_size, "validation: greedy decoding")
    chrf = sentence_chrf([d.translation for d in decoded], targets)
    bad = (chrf < s.bad_chrf).double()
    log.info("validation: %d verses, mean sentence chrF %.2f, %.1f %% below %.0f", len(items), float(chrf.mean()),
             100 * float(bad.mean()), s.bad_chrf)
    choices = fit_on_validation(predictor, [item.input_ids for item in items], [d.output_ids for d in decoded],
                                reference_ids(predictor, targets), 1.0 - chrf / 100.0, bad, s.choices)
    choices.calibration["abstain"].update(
        loss=f"share of outputs with sentence chrF < {s.bad_chrf:g} among the kept ones", bad_chrf=s.bad_chrf,
        fitted_on="validation greedy outputs, scoring mode, default parameters")
    report = {**choices.report, "refused_over_token_limit": len(pairs) - len(items),
              "sentence_chrf_mean": float(chrf.mean()), "bad_share": float(bad.mean()), "bad_chrf": s.bad_chrf}
    return choices, report


def evaluate_translation(predictor: Any, validation: Sequence[tuple[str, str]], test: Sequence[tuple[str, str]],
                         probe_texts: Sequence[str], probe_kinds: Sequence[str], s: EvalSettings) -> Evaluation:
    """Steps 1–2 of the module docstring. `predictor` is the in-memory serving predictor at τ = 1 without a
    rule; `probe_texts`/`probe_kinds` are the out-of-domain probes only (the in-domain side of the OOD task is
    the test subset itself)."""
    from training.translation.report import report_on_test  # it imports this module's quality helpers

    choices, validation_report = choose_on_validation(predictor, validation, s)
    served = rebuilt(predictor, calibration=choices.calibration, last_k=choices.last_k)
    metrics, curves = report_on_test(served, test, probe_texts, probe_kinds, s)
    metrics["validation"] = validation_report
    return Evaluation(metrics, choices.calibration, choices.last_k, curves)
