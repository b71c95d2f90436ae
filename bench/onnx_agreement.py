"""The onnxruntime backend against the torch backend on real reviews, and int8 against float32 on validation.

For the artifact's test split (the headline set the sentiment job reports on: the whole split by default), every
review runs through both backends in float32 with the same seed (item i: mix_seed(seed, i)) and T, in
length-sorted batches, and the script prints: labels that differ, abstain flags that differ, the largest logit
difference of any MC row, the largest difference of the mean τ-scaled probability, of the served probability
(after the confidence map, a step function for a histogram map, so a logit difference of 1e-6 at a knot moves it
by a whole step: counted separately) and of each uncertainty measure, both backends' accuracy, and their wall
time in this run. `--onnx-model` checks a given graph (e.g. an export package's `model.onnx`) instead of the one
exported at load. `--int8-items N` also quantises the float32 graph (training/export/quantize.py) and prints
accuracy and ECE of both on the first N validation reviews and whether the 0.5-point guard keeps it.

    python -m bench.onnx_agreement --version V [--items 5000] [--mc-samples 20] [--onnx-model PKG/model.onnx] \
        [--int8-items 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from models.core.artifacts import resolve_artifact
from models.core.dropout import mix_seed
from models.core.padding import pad_ids
from models.core.predictor import MCRequest, PredictorOptions
from models.core.uncertainty import calibrated_probs
from models.registry import load_predictor
from models.sentiment.mc import forward_logits
from models.sentiment.onnx_graph import export_onnx
from training.export.job import split_reviews
from training.export.quantize import quantization_report, quantize_int8

MEASURES = ("predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio", "probability_std")


def agreement(artifact: Path, texts: Sequence[str], labels: Sequence[int], mc_samples: int | None, seed: int,
              batch: int, onnx_model: str | None) -> dict[str, float]:
    """Both backends over (texts, labels); the differences and scores of the module docstring."""
    reference = load_predictor(artifact, PredictorOptions(device="cpu", dtype="float32"))
    onnx = load_predictor(artifact, PredictorOptions(device="cpu", dtype="float32", backend="onnxruntime",
                                                     onnx_model=onnx_model))
    samples = reference.default_mc_samples if mc_samples is None else mc_samples
    items = [reference.prepare(text, {}) for text in texts]
    order = sorted(range(len(items)), key=lambda i: -items[i].n_tokens)
    stats = {"items": len(items), "mc_samples": samples, "label_mismatches": 0, "abstain_mismatches": 0,
             "max_logit_diff": 0.0, "max_mean_prob_diff": 0.0, "max_served_prob_diff": 0.0,
             "served_prob_diffs_over_1e-4": 0, "torch_correct": 0, "onnx_correct": 0, "torch_s": 0.0, "onnx_s": 0.0,
             **{f"max_{m}_diff": 0.0 for m in MEASURES}}
    outcome = (None, False)  # OOD is not compared here (tests/models/sentiment/test_onnx.py does)
    for start in range(0, len(order), batch):
        index = order[start : start + batch]
        chunk = [items[i] for i in index]
        requests = [MCRequest(samples, mix_seed(seed, i)) for i in index]
        began = time.perf_counter()
        with torch.inference_mode():
            ids, mask = pad_ids([item.input_ids for item in chunk], reference.tokenizer.pad_token_id)
            want = forward_logits(reference.model, ids, mask, [r.mc_samples for r in requests],
                                  [r.seed for r in requests], reference.last_k, reference.sites)
        stats["torch_s"] += time.perf_counter() - began
        began = time.perf_counter()
        got, _ = onnx.graph_logits(chunk, requests)
        stats["onnx_s"] += time.perf_counter() - began
        for i, item, request, w, g in zip(index, chunk, requests, want, got, strict=True):
            stats["max_logit_diff"] = max(stats["max_logit_diff"], float((w - g).abs().max()))
            tau = reference.calibration.temperature_for(samples)
            mean_diff = (calibrated_probs(w, tau).mean(0) - calibrated_probs(g, tau).mean(0)).abs().max()
            stats["max_mean_prob_diff"] = max(stats["max_mean_prob_diff"], float(mean_diff))
            # The protected per-item step of both predictors: the same logits → the response's fields.
            a = reference._prediction(item, request, w, outcome)
            b = onnx._prediction(item, request, g, outcome)
            stats["label_mismatches"] += a.label != b.label
            stats["abstain_mismatches"] += a.abstain != b.abstain
            served = max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities)
            stats["max_served_prob_diff"] = max(stats["max_served_prob_diff"], served)
            stats["served_prob_diffs_over_1e-4"] += served > 1e-4
            if a.uncertainty is not None and b.uncertainty is not None:
                for m in MEASURES:
                    diff = abs(getattr(a.uncertainty, m) - getattr(b.uncertainty, m))
                    stats[f"max_{m}_diff"] = max(stats[f"max_{m}_diff"], diff)
            gold = reference.labels[labels[i]]
            stats["torch_correct"] += a.label == gold
            stats["onnx_correct"] += b.label == gold
        print(f"  {min(start + batch, len(order))}/{len(order)} reviews", file=sys.stderr, flush=True)
    stats["torch_accuracy"] = stats["torch_correct"] / len(items)
    stats["onnx_accuracy"] = stats["onnx_correct"] / len(items)
    stats["onnx_speedup"] = stats["torch_s"] / stats["onnx_s"]
    return stats


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.onnx_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--version", default=None, help="sentiment artifact version (default: the newest)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"), help="where the pinned IMDB archive is")
    parser.add_argument("--split", default="test", choices=["test", "validation"])
    parser.add_argument("--items", type=int, default=None, help="first N reviews of the split (default: all)")
    parser.add_argument("--mc-samples", type=int, default=None, help="T (default: the artifact's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    parser.add_argument("--onnx-model", default=None, help="a graph to check (default: exported at load)")
    parser.add_argument("--int8-items", type=int, default=0, help="validation reviews for int8 vs float32 (0: skip)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    artifact = resolve_artifact(args.artifacts_dir, "sentiment", args.version)
    if args.items != 0:
        texts, labels = split_reviews(artifact, args.cache_dir, args.split, args.items)
        print(f"{artifact.name}: {args.split}, {len(texts)} reviews, graph {args.onnx_model or 'exported at load'}, "
              f"threads {args.threads}")
        for name, value in agreement(artifact, texts, labels, args.mc_samples, args.seed, args.batch,
                                     args.onnx_model).items():
            print(f"  {name:32} {value:.3g}" if isinstance(value, float) else f"  {name:32} {value}")
    if args.int8_items:
        texts, labels = split_reviews(artifact, args.cache_dir, "validation", args.int8_items)
        reference = load_predictor(artifact, PredictorOptions(device="cpu", dtype="float32"))
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
            export_onnx(reference.model, reference.last_k, fp32)
            quantize_int8(fp32, int8)
            report = quantization_report(artifact, fp32, int8, texts, labels, seed=args.seed)
        print(f"int8 vs float32 on the first {len(texts)} validation reviews (T = {report['mc_samples']}):")
        for graph in ("float32", "int8"):
            print(f"  {graph:8} accuracy {report[graph]['accuracy']:.4f}  ECE {report[graph]['ece']:.4f}")
        print(f"  accuracy change {report['accuracy_change_points']:+.2f} points, ECE change "
              f"{report['ece_change']:+.4f}; guard (max drop {report['max_accuracy_drop_points']} points): "
              f"{'keeps' if report['accepted'] else 'refuses'} int8")


if __name__ == "__main__":
    main()
