"""Core ML conversion of the last-k MC graph (coremltools; runs on Linux, only prediction needs macOS/iOS).

`convert_coreml(predictor, target)` traces models/sentiment/onnx_graph.MCGraph from the predictor's weights and
converts it to an ML Program (float32 compute, iOS 16+) with flexible batch, length and row dimensions; ids are
int32 (Core ML has no int64 inputs). Inputs and outputs keep the ONNX graph's names. The graph is the padded
layout (no in-graph token packing): same results, and a device runs one item at a time, which has no padding.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.sentiment.onnx_graph import OUTPUT, MCGraph, example_inputs
from models.sentiment.predictor import SentimentPredictor

MAX_ITEMS, MAX_ROWS = 64, 4096


def convert_coreml(predictor: SentimentPredictor, target: Path) -> Any:
    """Write `target` (.mlpackage) and return the coremltools model."""
    import coremltools as ct

    model = copy.deepcopy(predictor.model).float().cpu().eval()
    graph = MCGraph(model, predictor.last_k, packed=False).eval()  # Core ML has no dynamic-length NonZero
    hidden = int(model.config.hidden_size)
    with torch.no_grad():
        traced = torch.jit.trace(graph, example_inputs(graph, hidden))
    items = ct.RangeDim(1, MAX_ITEMS, default=2)
    length = ct.RangeDim(2, predictor.max_input_tokens, default=5)
    rows = ct.RangeDim(1, MAX_ROWS, default=3)
    top = graph.n_layers - 1
    inputs = [ct.TensorType("input_ids", shape=(items, length), dtype=np.int32),
              ct.TensorType("attention_mask", shape=(items, length), dtype=np.int32),
              ct.TensorType("row_index", shape=(rows,), dtype=np.int32)]
    for name in graph.names:
        if name == "mask_head":
            shape: tuple[Any, ...] = (rows, hidden)
        else:
            shape = (rows, 1 if name.startswith(f"mask_layer{top}_") else length, hidden)
        inputs.append(ct.TensorType(name, shape=shape, dtype=np.float32))
    converted = ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(OUTPUT)], convert_to="mlprogram",
                           minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32)
    converted.short_description = f"{predictor.task} {predictor.version}: last-k MC dropout, masks as inputs"
    converted.save(str(target))
    return converted
