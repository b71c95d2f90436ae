"""The lean `/predict` body (`TaskAdapter.to_json`, encoded by msgspec) equals the validated response model's
body for every task, so skipping per-item pydantic validation changes no byte a client can see."""

from __future__ import annotations

import dataclasses
import json

import msgspec
import pytest

from models.core.predictor import (
    ClassificationUncertainty,
    GenerationPrediction,
    SentimentPrediction,
    SequenceUncertainty,
    TokenScore,
    TopToken,
    TranslationPrediction,
)
from service.adapters import ADAPTERS
from service.schemas import GenerationPredictionOut, SentimentPredictionOut, TranslationPredictionOut

_SEQ = SequenceUncertainty(-1.5, -1.6, 0.02, -0.5, -0.53, 0.002, 0.7, 0.01, 0.05)
_TOKENS = [TokenScore("Im", 0.9, 0.3, 0.01, (TopToken("Im", -0.1), TopToken("Am", -2.4))),
           TokenScore("</s>", 0.8, 0.5, None)]

PREDICTIONS = {
    "sentiment": [
        SentimentPrediction("positive", 0.93, {"negative": 0.07, "positive": 0.93},
                            ClassificationUncertainty(0.25, 0.2, 0.05, 0.1, 0.04), False, 12, False),
        SentimentPrediction("negative", 0.6, {"negative": 0.6, "positive": 0.4}, None, False, 3, True),
    ],
    "translation": [TranslationPrediction("Im Anfang", _SEQ, _TOKENS, "eos", 9, 2, True, output_ids=(5, 2))],
    "generation": [GenerationPrediction("and so", None, None, "length", 4, 2, 0.01, 0.2, output_ids=(7, 8))],
}


@pytest.mark.parametrize("task", sorted(PREDICTIONS))
def test_lean_body_equals_the_validated_model_body(task: str) -> None:
    adapter = ADAPTERS[task]
    for prediction in PREDICTIONS[task]:
        lean = json.loads(msgspec.json.encode(adapter.to_json(prediction)))
        assert lean == adapter.to_response(prediction).model_dump(mode="json")


@pytest.mark.parametrize(("prediction", "response"), [
    (SentimentPrediction, SentimentPredictionOut),
    (TranslationPrediction, TranslationPredictionOut), (GenerationPrediction, GenerationPredictionOut),
])
def test_served_dataclass_fields_are_the_response_fields(prediction: type, response: type) -> None:
    # A field added to a prediction dataclass but not to its response model (or the other way round) must be
    # a decision: sentiment is served as the dataclass itself, sequences as the response model's fields.
    names = {field.name for field in dataclasses.fields(prediction)}
    if response is SentimentPredictionOut:
        assert names == set(response.model_fields)
    else:
        assert set(response.model_fields) <= names
