"""The sentiment predictor on ONNX Runtime (CPU): `NLP_BACKEND=onnxruntime` (PredictorOptions.backend).

Same artifact, same `prepare`, `cost`, calibration, uncertainty and abstain rule as `SentimentPredictor`; only
the batched MC forward differs: the last-k MC graph of models/sentiment/onnx_graph.py, exported from the loaded
weights at load time (seconds; nothing written to disk) or read from a given `.onnx` file (e.g. the int8 model
of an export package, whose accuracy guard ran when it was built), runs in an onnxruntime session, with dropout
masks drawn on the host by `MaskSource` from the same per-row seeds. So a request with a seed gets the torch
backend's answer up to float rounding (tests/models/sentiment/test_onnx.py states the tolerance). The graph packs
the tokens of the deterministic layers as the torch path does, so mixed-length batches pay for no padding there.
With an OOD detector in the artifact, the graph exported at load also outputs the detector's pooled features; a
given graph has no such output, and its features come from one torch pass of the layers below that layer.

Refuses (ArtifactError) a device other than CPU and live attention-probability dropout (the graph has no such
site). onnxruntime is imported only when this backend is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import BertForSequenceClassification, PreTrainedTokenizerBase

from models.core.artifacts import ArtifactError, Manifest
from models.core.ood import OODDetector
from models.core.predictor import MCRequest, PredictorOptions, PreparedItem, SentimentPrediction
from models.sentiment.onnx_graph import (
    OUTPUT,
    export_onnx,
    feature_layer_in_graph,
    mask_names,
    masks_for,
    ood_output,
    row_index,
)
from models.sentiment.predictor import SentimentPredictor

BACKEND = "onnxruntime"


def cpu_session(model: bytes | Path, threads: int) -> Any:
    """An onnxruntime CPU session of `model` (bytes or a path) with `threads` intra-op threads, sequential
    execution (one stream of work, as the service's single inference thread expects) and every graph
    optimisation on (GELU, LayerNorm and MatMul+Add fusions, constant folding). Idle intra-op threads sleep
    instead of spinning: in the server, on 2 cores, spinning took 175 % CPU where sleeping took 157 %, for the same
    throughput, and the cores are shared with the event loop."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxSentimentPredictor(SentimentPredictor):
    """`SentimentPredictor` whose batched MC forward runs on onnxruntime (module docstring)."""

    backend: ClassVar[str] = BACKEND
    # The exported graph is BERT's layer structure: other families stay on the torch backend.
    model_class: ClassVar[Any] = BertForSequenceClassification
    generic_path: ClassVar[bool] = False

    def __init__(self, model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerBase, manifest: Manifest,
                 options: PredictorOptions) -> None:
        if torch.device(options.device).type != "cpu":
            raise ArtifactError(f"the {BACKEND} backend runs on CPU, not {options.device}")
        super().__init__(model, tokenizer, manifest, options)
        # Its session's intra-op threads are fixed at load: concurrent runs would oversubscribe them (unmeasured).
        self.concurrent_batches = False
        self.live_rates = self.rates.live(self.sites)
        if self.live_rates.attention > 0:
            raise ArtifactError(f"the {BACKEND} backend has no attention-probability dropout; "
                                f"serve with mc_dropout_sites hidden,head")
        self.hidden = int(self.model.config.hidden_size)
        self.graph_source = str(options.onnx_model) if options.onnx_model else "exported at load"
        self.session: Any = None
        self.graph_feature_layers: tuple[int, ...] = ()  # the OOD layers whose features the graph outputs
        if options.onnx_model:  # a given graph opens (and is checked) now; an exported one once the OOD layer is known
            self._open_session(Path(options.onnx_model))

    def attach_ood(self, detector: OODDetector | None) -> None:
        super().attach_ood(detector)
        if self.options.onnx_model:
            return
        # Export with the detector's layers as further outputs, so their features cost no extra pass; a layer that
        # full MC reaches only after rows expanded comes from one torch pass instead.
        layers = tuple(layer for layer in (self.ood.layers if self.ood is not None else ())
                       if feature_layer_in_graph(self.num_layers, self.last_k, layer))
        self._open_session(export_onnx(self.model, self.last_k, feature_layers=layers))
        self.graph_feature_layers = layers

    def _open_session(self, graph: bytes | Path) -> None:
        self.session = cpu_session(graph, torch.get_num_threads())
        expected = ["input_ids", "attention_mask", "row_index", *mask_names(self.num_layers, self.last_k)]
        got = [i.name for i in self.session.get_inputs()]
        if got != expected:
            raise ArtifactError(f"{self.graph_source}: graph inputs {got} do not match last-k {self.last_k} "
                                f"({expected})")

    def graph_logits(self, items: Sequence[PreparedItem],
                     requests: Sequence[MCRequest]) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        """The graph's logits per item ([max(T_i, 1), C], before temperature) and the pooled features [B, H] of each
        OOD detector layer the graph outputs."""
        if self.session is None:  # built without `load`: export now
            self.attach_ood(self.ood)
        samples = [r.mc_samples for r in requests]
        length = max(item.n_tokens for item in items)
        ids = np.full((len(items), length), self.tokenizer.pad_token_id, dtype=np.int64)
        attention = np.zeros((len(items), length), dtype=np.int64)
        for row, item in enumerate(items):
            ids[row, : item.n_tokens] = item.input_ids
            attention[row, : item.n_tokens] = 1
        masks = masks_for(self.num_layers, self.last_k, self.hidden, length, samples, [r.seed for r in requests],
                          self.live_rates)
        feed = {"input_ids": ids, "attention_mask": attention, "row_index": row_index(samples).numpy(),
                **{name: mask.numpy() for name, mask in masks.items()}}
        layers = [layer for layer in self.graph_feature_layers if self.ood is not None and layer in self.ood.layers]
        outputs = self.session.run([OUTPUT, *(ood_output(layer) for layer in layers)], feed)
        per_item = list(torch.split(torch.from_numpy(outputs[0]), [max(t, 1) for t in samples]))
        return per_item, {layer: torch.from_numpy(out) for layer, out in zip(layers, outputs[1:], strict=True)}

    def _predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[SentimentPrediction]:
        per_item, by_layer = self.graph_logits(items, requests)
        missing = [layer for layer in self.ood.layers if layer not in by_layer] if self.ood is not None else []
        if missing:  # a given graph has no OOD output, or full MC expands rows below a layer: one torch pass
            by_layer |= self.ood_features(items, missing)
        outcomes = self._ood_outcomes(by_layer or None, items)
        return [self._prediction(item, request, item_logits, outcome)
                for item, request, item_logits, outcome in zip(items, requests, per_item, outcomes, strict=True)]

    def _task_facts(self) -> dict[str, Any]:
        ood = None
        if self.ood is not None:
            outside = [layer for layer in self.ood.layers if layer not in self.graph_feature_layers]
            ood = "graph output" if not outside else f"torch pass (layers {outside})" if len(outside) == len(
                self.ood.layers) else f"graph output + torch pass (layers {outside})"
        return {**super()._task_facts(), "backend": {"name": BACKEND, "graph": self.graph_source,
                                                     "dtype": "float32", "threads": torch.get_num_threads(),
                                                     "layout": "packed", "ood_features": ood}}
