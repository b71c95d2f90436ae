"""int8 dynamic quantisation of an exported MC graph, with its accuracy and ECE change and a refusal guard.

`quantize_int8(source, target)` is onnxruntime's own `quantize_dynamic` (weights int8, activations quantised
per batch at run time; MatMul/Gemm only). `guarded_quantization(artifact, fp32, int8, texts, labels)` serves both
graphs through the onnxruntime predictor (same masks, same calibration, the artifact's default T), compares
accuracy and ECE on the given labelled validation items and raises `QuantizationRefusedError` when int8 loses
more than `MAX_ACCURACY_DROP_POINTS` points of accuracy; else it returns the report the package keeps
(`quantization_report` is the same report without the refusal, for measuring).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.core.predictor import MCRequest, PredictorOptions
from models.registry import load_predictor
from training.core.scoring import ece

MAX_ACCURACY_DROP_POINTS = 0.5
_BATCH = 32


class QuantizationRefusedError(RuntimeError):
    """The int8 model lost more accuracy on validation than the guard allows."""


def quantize_int8(source: Path, target: Path) -> Path:
    """Write the dynamic int8 quantisation of the ONNX model `source` to `target`; returns `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


def _scores(artifact: Path, graph: Path, texts: Sequence[str], labels: Sequence[int], mc_samples: int | None,
            seed: int) -> dict[str, float]:
    predictor = load_predictor(artifact, PredictorOptions(backend="onnxruntime", onnx_model=str(graph)))
    samples = predictor.default_mc_samples if mc_samples is None else mc_samples
    probs = []
    for start in range(0, len(texts), _BATCH):
        chunk = [predictor.prepare(text, {}) for text in texts[start : start + _BATCH]]
        requests = [MCRequest(samples, seed + start + i) for i in range(len(chunk))]
        probs += [[p.probabilities[label] for label in predictor.labels] for p in predictor.predict(chunk, requests)]
    p = torch.tensor(probs, dtype=torch.float64)
    y = torch.tensor(list(labels))
    return {"accuracy": float((p.argmax(dim=1) == y).double().mean()), "ece": ece(p, y), "mc_samples": samples}


def quantization_report(artifact: Path, fp32: Path, int8: Path, texts: Sequence[str], labels: Sequence[int],
                        *, mc_samples: int | None = None, seed: int = 0,
                        max_drop_points: float = MAX_ACCURACY_DROP_POINTS) -> dict[str, Any]:
    """Accuracy and ECE of the fp32 and int8 graphs on (texts, labels), their change and the guard's verdict
    (`accepted`: accuracy drops by at most `max_drop_points` percentage points); never raises on a refusal."""
    before = _scores(artifact, fp32, texts, labels, mc_samples, seed)
    after = _scores(artifact, int8, texts, labels, mc_samples, seed)
    drop = 100 * (before["accuracy"] - after["accuracy"])
    return {"items": len(texts), "mc_samples": before["mc_samples"], "float32": before, "int8": after,
            "accuracy_change_points": -drop, "ece_change": after["ece"] - before["ece"],
            "max_accuracy_drop_points": max_drop_points, "accepted": drop <= max_drop_points}


def guarded_quantization(artifact: Path, fp32: Path, int8: Path, texts: Sequence[str], labels: Sequence[int],
                         *, mc_samples: int | None = None, seed: int = 0,
                         max_drop_points: float = MAX_ACCURACY_DROP_POINTS) -> dict[str, Any]:
    """`quantization_report`, raising QuantizationRefusedError when accuracy drops by more than `max_drop_points`
    percentage points."""
    report = quantization_report(artifact, fp32, int8, texts, labels, mc_samples=mc_samples, seed=seed,
                                 max_drop_points=max_drop_points)
    if not report["accepted"]:
        drop = -report["accuracy_change_points"]
        raise QuantizationRefusedError(f"int8 loses {drop:.2f} accuracy points on {len(texts)} validation items "
                                       f"(more than {max_drop_points}); keep the float32 model. Report: {report}")
    return report
