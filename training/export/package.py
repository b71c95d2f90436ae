"""A self-contained device package of a classification artifact: the last-k MC graph (ONNX or Core ML), the
tokenizer files, labels, calibration, MC settings and a README of its inputs and outputs.

`write_package(artifact, output_dir, fmt, quantize=None, validation=None)` writes
`<output_dir>/<task>-<version>-<fmt>/` (replaced if present) and returns it:

- `model.onnx` (float32; with `quantize="int8"` also `model.int8.onnx` and its guard report) or
  `model.mlpackage` (Core ML ML Program, float32);
- `tokenizer.json`, `tokenizer_config.json` (the artifact's own files);
- `package.json`: labels, preprocessing (ids, head+tail truncation), the graph's inputs and outputs with
  shapes, the MC settings (last-k, live dropout rates, default T, mask names), the calibration (τ for MC and
  deterministic passes, confidence maps as knots, abstain rule) and the quantisation report;
- `README.md`: how to run MC dropout on the device with these files.

The graph is models/sentiment/onnx_graph.MCGraph: dropout masks are inputs, so the device draws them (any RNG;
the server's seeded scheme is `MaskSource`) and the same masks give the server's logits.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.core.artifacts import MODEL_DIR
from models.core.predictor import PredictorOptions
from models.registry import load_predictor
from models.sentiment.onnx_graph import OPSET, OUTPUT, export_onnx, mask_names
from models.sentiment.predictor import SentimentPredictor
from training.export.quantize import guarded_quantization, quantize_int8
from training.export.readme import package_readme

FORMATS = ("onnx", "coreml")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def graph_io(predictor: SentimentPredictor) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of the MC graph: name, dtype, shape (B items, L padded tokens, R = Σ max(T_i, 1) rows,
    H hidden size, C labels)."""
    hidden, top = int(predictor.model.config.hidden_size), predictor.num_layers - 1
    inputs: list[dict[str, Any]] = [
        {"name": "input_ids", "dtype": "int64", "shape": ["B", "L"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["B", "L"]},
        {"name": "row_index", "dtype": "int64", "shape": ["R"]},
    ]
    for name in mask_names(predictor.num_layers, predictor.last_k):
        per_row = name == "mask_head" or name.startswith(f"mask_layer{top}_")
        shape = ["R", hidden] if name == "mask_head" else ["R", 1 if per_row else "L", hidden]
        inputs.append({"name": name, "dtype": "float32", "shape": shape})
    return {"inputs": inputs,
            "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": ["R", len(predictor.labels)]}]}


def describe_package(predictor: SentimentPredictor, fmt: str) -> dict[str, Any]:
    """The package.json body (module docstring)."""
    tokenizer, rates = predictor.tokenizer, predictor.rates.live(predictor.sites)
    return {
        "task": predictor.task, "name": predictor.name, "version": predictor.version, "format": fmt,
        "opset": OPSET if fmt == "onnx" else None,
        "labels": predictor.labels,
        "preprocessing": {"max_length": predictor.max_input_tokens, "head_tokens": predictor.head_tokens,
                          "truncation": "head+tail", "cls_token_id": tokenizer.cls_token_id,
                          "sep_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id},
        **graph_io(predictor),
        "mc": {"last_k": min(predictor.last_k, predictor.num_layers), "num_layers": predictor.num_layers,
               "live_sites": sorted(predictor.sites), "rates": {"hidden": rates.hidden, "head": rates.head},
               "default_mc_samples": predictor.default_mc_samples,
               "mask_value": "keep / (1 - p) for a sampled row (keep with probability 1 - p), 1 for a T = 0 row",
               "server_seeding": "MaskSource (models/core/dropout.py): row t of an item with seed s draws site "
                                 "c's mask from torch.Generator(mix_seed(mix_seed(s, t), c)).uniform_()"},
        "calibration": predictor.manifest.calibration,
    }


def write_package(artifact: Path, output_dir: Path, fmt: str, *, quantize: str | None = None,
                  validation: tuple[Sequence[str], Sequence[int]] | None = None) -> Path:
    """Write the package (module docstring). `quantize="int8"` (ONNX only) needs `validation` (texts, label ids)
    for the accuracy guard and raises QuantizationRefusedError when it fails. Raises ValueError for an unknown
    format or a task without a device graph."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")
    if quantize not in (None, "int8") or (quantize and fmt != "onnx"):
        raise ValueError(f"quantize {quantize!r} is only 'int8', for onnx")
    predictor = load_predictor(Path(artifact), PredictorOptions(device="cpu", dtype="float32"))
    if not isinstance(predictor, SentimentPredictor):
        raise ValueError(f"{predictor.task}: only classification (sentiment) has a device graph")
    target = Path(output_dir) / f"{predictor.name}-{predictor.version}-{fmt}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(artifact) / MODEL_DIR / name, target / name)
    facts = describe_package(predictor, fmt)
    if fmt == "onnx":
        export_onnx(predictor.model, predictor.last_k, target / "model.onnx")
        facts["files"] = {"model": "model.onnx"}
        if quantize:
            if validation is None:
                raise ValueError("int8 needs labelled validation texts for its accuracy guard")
            quantize_int8(target / "model.onnx", target / "model.int8.onnx")
            try:
                facts["quantization"] = guarded_quantization(Path(artifact), target / "model.onnx",
                                                             target / "model.int8.onnx", *validation)
            except Exception:
                (target / "model.int8.onnx").unlink()
                raise
            facts["files"]["model_int8"] = "model.int8.onnx"
    else:
        from training.export.coreml import convert_coreml  # coremltools only for this format

        convert_coreml(predictor, target / "model.mlpackage")
        facts["files"] = {"model": "model.mlpackage"}
    (target / "package.json").write_text(json.dumps(facts, indent=2))
    (target / "README.md").write_text(package_readme(facts))
    return target
