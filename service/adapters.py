"""Per-task glue between a predictor's prediction objects and the HTTP layer: a dict registry.

An adapter turns one prediction (a models-layer dataclass) into its response model and feeds the
uncertainty metrics; the controllers never branch on the task name. `to_json` is the lean form `POST /predict`
serves: the prediction's own fields, exactly the response model's (tests/service/test_adapters.py keeps them in
step), handed to Litestar's msgspec encoder without building and validating a pydantic model per item, since
the code built these values itself.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Protocol

from pydantic import BaseModel

from service.metrics import Labels, ServiceMetrics
from service.schemas import GenerationPredictionOut, SentimentPredictionOut, TranslationPredictionOut


class TaskAdapter(Protocol):
    streams: bool  # True: the task's predictor feeds MCRequest.text_sink (POST /predict/stream)

    def to_response(self, prediction: Any) -> BaseModel:
        """The response model of one prediction (field names as docs/architecture.md §5)."""
        ...

    def to_json(self, prediction: Any) -> Any:
        """The same body as `to_response`, JSON-ready for msgspec (dataclasses and dicts), unvalidated."""
        ...

    def observe(self, metrics: ServiceMetrics, labels: Labels, prediction: Any) -> None:
        """Record the prediction's uncertainty (and generated tokens, for sequence tasks)."""
        ...


class SentimentAdapter:
    """`models.core.predictor.SentimentPrediction` → `SentimentPredictionOut`."""

    streams = False

    def to_response(self, prediction: Any) -> BaseModel:
        return SentimentPredictionOut.model_validate(dataclasses.asdict(prediction))

    def to_json(self, prediction: Any) -> Any:
        # The dataclass's fields are the response's (nested dataclasses included); msgspec encodes it as is.
        return _fields_of(prediction, SentimentPredictionOut)

    def observe(self, metrics: ServiceMetrics, labels: Labels, prediction: Any) -> None:
        metrics.observe_ood(labels, prediction.ood_score, prediction.out_of_distribution)  # at every T
        metrics.observe_abstain(labels, prediction.abstain_reason)  # at every T (out of distribution at T = 0 too)
        # Deterministic predictions carry no uncertainty; counting them as 0 would fake a calm model.
        if prediction.uncertainty is None:
            return
        metrics.observe_uncertainty(
            labels,
            prediction.uncertainty.predictive_entropy,
            prediction.uncertainty.mutual_information,
        )


class SequenceAdapter:
    """A sequence task's prediction (translation, generation) → its response model.

    The entropy/MI histograms get the sequence's mean token entropy and mean token MI (nats), so they stay
    on the per-prediction scale of the other tasks; generated tokens are counted for every prediction."""

    def __init__(self, response: type[BaseModel], streams: bool) -> None:
        self.response = response
        self.streams = streams

    def to_response(self, prediction: Any) -> BaseModel:
        fields = dataclasses.asdict(prediction)
        fields.pop("output_ids", None)  # token ids are for evaluations (training/), not part of the API
        return self.response.model_validate(fields)

    def to_json(self, prediction: Any) -> Any:
        # Only the response's fields: output ids and decode timings stay out of the API.
        return _fields_of(prediction, self.response)

    def observe(self, metrics: ServiceMetrics, labels: Labels, prediction: Any) -> None:
        metrics.observe_generated(labels, prediction.output_tokens)
        metrics.observe_ood(labels, prediction.ood_score, prediction.out_of_distribution)  # at every T
        metrics.observe_abstain(labels, prediction.abstain_reason)  # at every T
        if prediction.uncertainty is None:
            return
        metrics.observe_uncertainty(
            labels,
            prediction.uncertainty.mean_token_entropy,
            prediction.uncertainty.mean_token_mutual_information,
        )


def _fields_of(prediction: Any, response: type[BaseModel]) -> Any:
    """`prediction` itself when its dataclass fields are exactly `response`'s, else a dict of those fields
    (top level only: nested dataclasses already have their response model's fields)."""
    names = _response_fields(response)
    if tuple(field.name for field in dataclasses.fields(prediction)) == names:
        return prediction
    return {name: getattr(prediction, name) for name in names}


@functools.cache
def _response_fields(response: type[BaseModel]) -> tuple[str, ...]:
    return tuple(response.model_fields)


ADAPTERS: dict[str, TaskAdapter] = {
    "sentiment": SentimentAdapter(),
    "translation": SequenceAdapter(TranslationPredictionOut, streams=False),
    "generation": SequenceAdapter(GenerationPredictionOut, streams=True),
}
