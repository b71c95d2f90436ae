"""Request and response bodies of the HTTP API (docs/architecture.md §5), as pydantic models.

The field descriptions are the API reference: Litestar copies them into the OpenAPI schema (`/schema`),
units included. Probabilities are in [0, 1]; entropies and mutual information are natural-log nats.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SEED_MAX = 2**31 - 1
OOD_SCORE = (
    "Out-of-distribution score of the input: the distance of its features (a mean-pooled hidden state of the model's "
    "own deterministic pass) to the training data's, or its tokens' mean negative log-likelihood under a bigram or "
    "trigram density of the training inputs, or a mix of both (the artifact's detector, chosen on validation), "
    "divided by "
    "the threshold fitted on validation so that at most 5 % of in-domain validation inputs exceed it. "
    "Dimensionless; higher = less like "
    "the training data; > 1 = `out_of_distribution`. Computed at every mc_samples, 0 included; null when the model "
    "has no OOD statistics. It says whether the input is like what the model was trained on, not whether this answer "
    "is right.")
ABSTAIN = (
    "True when the prediction should not be trusted: the input is out of distribution, or the calibrated uncertainty "
    "passes the model's abstain threshold (chosen on validation for a target risk; needs mc_samples ≥ 2). "
    "`abstain_reason` says which.")

OUT_OF_DISTRIBUTION = ("True when `ood_score` > 1: the input is unlike the training data (at most 5 % of in-domain "
                       "validation inputs are flagged); false when the model has no OOD statistics.")
ABSTAIN_REASON = ("Why `abstain` is true: `out_of_distribution` (checked first) or `uncertain` (the calibrated "
                  "uncertainty passed the threshold); null when `abstain` is false.")
AbstainReason = Literal["out_of_distribution", "uncertain"]


class PredictRequest(BaseModel):
    """`POST /predict` body. Limits (items, characters, tokens, mc_samples cap) come from the settings."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"task": "sentiment", "text": "A quiet, moving film.", "mc_samples": 20,
                                         "seed": 7}]},
    )

    model: str | None = Field(
        default=None, description="Name of the model to run (see `GET /models`), e.g. one trained with `--name`. "
        "Give `model`, `task` or both (then they must agree).", examples=["support-tickets"])
    task: str | None = Field(
        default=None, description="Task to run: `sentiment` (alias `classification`), `translation` or `generation`: "
        "that task's default model (the one named after the task, or the only model of the task). Ignored "
        "for the choice when `model` is given, but then it must be that model's task.", examples=["sentiment"])
    text: str | list[str] = Field(
        description="One input text, or a list of texts (one prediction per item, in the same order). Each "
        "item counts against the per-request item limit and the model's queue; each is limited in characters "
        "and, after tokenisation, in tokens.",
        examples=["A quiet, moving film.", ["Loved it.", "Two hours I will not get back."]],
    )
    mc_samples: int | None = Field(
        default=None, ge=0,
        description="Monte-Carlo dropout samples T (count of stochastic forward passes). 0 = deterministic, "
        "no uncertainty; 1 is served as 0 in every task (one sample cannot disagree with itself, so its "
        "uncertainty would read as perfect agreement): `uncertainty` null, `abstain` false; absent = the "
        "server's default for the model; above the server's cap = 422.",
    )
    seed: int | None = Field(
        default=None, ge=0, le=SEED_MAX,
        description="Seed of the dropout masks (integer 0..2^31-1). The same text, mc_samples and seed give "
        "the same prediction. Absent = the server draws one and returns it in the response's `seed`, so any "
        "result can be reproduced. Every item of a list uses this seed.",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Task-specific options; unknown options are refused with 422. Sentiment: none. "
        "Translation: `max_new_tokens`, `num_beams`, `uncertainty_mode` (`scoring`|`sampling`), "
        "`return_tokens`. Generation: `max_new_tokens`, `temperature` (0 = greedy), `top_k` (0 = off), "
        "`top_p`, `repetition_penalty`, `stop` (string or list), `return_tokens`.",
    )

    @model_validator(mode="after")
    def _names_a_model(self) -> PredictRequest:
        if self.model is None and self.task is None:
            raise ValueError("name a model (`model`) or a task (`task`)")
        return self


class ModelRef(BaseModel):
    name: str = Field(description="Model name (its directory under the artifacts root; a task's default model "
                      "is named after the task).")
    version: str = Field(description="Artifact version id (UTC timestamp + suffix) that answered; it changes when "
                         "a new version is swapped in.")


class ClassificationUncertainty(BaseModel):
    """MC-dropout uncertainty of one classification, from T samples; all in nats unless noted. Which to trust: to
    rank likely errors, `predictive_entropy` (or 1 − `confidence`; on the quick sentiment model MC adds at most 0.003
    misclassification AUROC over the deterministic probability); `mutual_information`, the epistemic part, is a
    weaker error signal; whether the input is like the training data at all is `ood_score`'s job."""

    predictive_entropy: float = Field(description="H[mean_t p_t]: total uncertainty, nats (≤ ln #labels).")
    expected_entropy: float = Field(description="mean_t H[p_t]: aleatoric (data) uncertainty, nats.")
    mutual_information: float = Field(
        description="predictive − expected entropy: epistemic (model) uncertainty, nats, ≥ 0.")
    variation_ratio: float = Field(description="1 − (count of the most common per-sample argmax) / T, 0..1.")
    probability_std: float = Field(description="Std over samples of the predicted label's probability, 0..1.")


class SentimentPredictionOut(BaseModel):
    """One sentiment prediction."""

    label: str = Field(description="Predicted label: argmax of the mean (calibrated) probabilities.")
    confidence: float = Field(description="Probability of `label`, 0..1.")
    probabilities: dict[str, float] = Field(description="Mean calibrated probability per label, 0..1, sums to 1.")
    uncertainty: ClassificationUncertainty | None = Field(description="MC uncertainty; null when mc_samples < 2.")
    abstain: bool = Field(description=ABSTAIN)
    input_tokens: int = Field(description="Tokens the model read for this item (count).")
    truncated: bool = Field(description="True when the text was cut to the model's token limit.")
    ood_score: float | None = Field(default=None, description=OOD_SCORE)
    out_of_distribution: bool = Field(default=False, description=OUT_OF_DISTRIBUTION)
    abstain_reason: AbstainReason | None = Field(default=None, description=ABSTAIN_REASON)


class SequenceUncertaintyOut(BaseModel):
    """MC-dropout uncertainty of one output sequence: the deterministic output scored under T dropout masks
    in one teacher-forced pass (Fomicheva et al. 2020). Log-probabilities are sums over the output's n tokens
    (`</s>` included when generated), in nats; a sum grows with n, so each also comes per token (`*_per_token`),
    which compares outputs of different lengths. Which to trust for an output's quality: the per-token
    log-probabilities (TP or D-TP per token) and `mean_token_entropy` (Pearson about 0.5 with sentence chrF on the
    quick translation model); the variances and token mutual information barely rank quality; for input unlike the
    training data, `ood_score`."""

    sequence_log_prob: float = Field(description="TP: log-probability of the output under the deterministic "
                                     "model, nats (≤ 0; closer to 0 = more confident).")
    mc_log_prob_mean: float = Field(description="D-TP: mean over the T dropout samples of the output's "
                                    "log-probability, nats (≤ 0).")
    mc_log_prob_var: float = Field(description="D-Var: variance over the T samples of the output's "
                                   "log-probability, nats² (≥ 0; higher = less certain).")
    sequence_log_prob_per_token: float = Field(description="TP / n: mean log-probability per output token under "
                                               "the deterministic model, nats per token (≤ 0).")
    mc_log_prob_mean_per_token: float = Field(description="D-TP / n: mean over the T samples of the output's mean "
                                              "log-probability per token, nats per token (≤ 0).")
    mc_log_prob_var_per_token: float = Field(description="Variance over the T samples of the output's mean "
                                             "log-probability per token (= D-Var / n²), (nats per token)² (≥ 0; "
                                             "higher = less certain).")
    mean_token_entropy: float = Field(description="Mean over output tokens of the predictive entropy of the MC "
                                      "mean next-token distribution, nats.")
    mean_token_mutual_information: float = Field(description="Mean over output tokens of the mutual information "
                                                 "(epistemic), nats, ≥ 0.")
    max_token_mutual_information: float = Field(description="Largest token mutual information, nats, ≥ 0.")
    sampling_chrf: float | None = Field(
        default=None, description="Only with `uncertainty_mode: sampling`: mean pairwise chrF of T stochastic "
        "decodes, 0..1 (1 = the samples agree). Null in `scoring` mode.")


class TopTokenOut(BaseModel):
    """One alternative at an output position."""

    token: str = Field(description="The alternative token's text.")
    logprob: float = Field(description="Its log-probability, nats (after the model's temperature τ).")


class TokenOut(BaseModel):
    """One output token (subword), in output order. Which to trust for "this token is likely wrong": 1 −
    `probability` (on the quick generation model no MC lever ranks next-token errors better than the deterministic
    probability: README, `python -m training.generation.levers`); `mutual_information` is the weakest error signal."""

    token: str = Field(description="The token's text (a subword; `</s>` for the end of sequence).")
    probability: float = Field(description="Mean over the T samples of the token's probability, 0..1 "
                               "(deterministic probability when mc_samples < 2).")
    entropy: float = Field(description="Predictive entropy of the MC mean next-token distribution, nats.")
    mutual_information: float | None = Field(description="Token mutual information (epistemic), nats, ≥ 0; "
                                             "null when mc_samples < 2.")
    top_logprobs: list[TopTokenOut] | None = Field(
        default=None, description="Generation with the `top_logprobs` parameter: the k most likely tokens at this "
        "position, most likely first, from the distribution `probability` comes from (MC mean when mc_samples ≥ 2).")


class TranslationPredictionOut(BaseModel):
    """One translation."""

    translation: str = Field(description="The translation (greedy or beam decode without dropout).")
    uncertainty: SequenceUncertaintyOut | None = Field(description="Sequence uncertainty; null when mc_samples < 2.")
    tokens: list[TokenOut] | None = Field(
        default=None, description="Per-token scores, one per output token (`len == output_tokens`); only "
        "with `parameters.return_tokens: true`.")
    finish_reason: Literal["eos", "length"] = Field(
        description="`eos`: the model ended the sentence; `length`: cut at max_new_tokens.")
    input_tokens: int = Field(description="Tokens the model read for this item (count, `</s>` included).")
    output_tokens: int = Field(description="Tokens generated (count, `</s>` included when generated).")
    abstain: bool = Field(default=False, description=ABSTAIN)
    ood_score: float | None = Field(default=None, description=OOD_SCORE)
    out_of_distribution: bool = Field(default=False, description=OUT_OF_DISTRIBUTION)
    abstain_reason: AbstainReason | None = Field(default=None, description=ABSTAIN_REASON)


class GenerationPredictionOut(BaseModel):
    """One continuation of a prompt."""

    text: str = Field(description="The generated continuation (the prompt not repeated; cut before a stop "
                      "string). Sampled with the request's temperature/top-k/top-p, dropout off.")
    uncertainty: SequenceUncertaintyOut | None = Field(description="Sequence uncertainty of the generated tokens "
                                                       "scored under T dropout masks; null when mc_samples < 2.")
    tokens: list[TokenOut] | None = Field(
        default=None, description="Per-token scores, one per generated token (`len == output_tokens`, the "
        "end-of-sequence token included when generated); only with `parameters.return_tokens: true`.")
    finish_reason: Literal["eos", "stop", "length"] = Field(
        description="`eos`: the model ended the text; `stop`: a stop string was produced; `length`: cut at "
        "max_new_tokens.")
    input_tokens: int = Field(description="Prompt tokens (count).")
    output_tokens: int = Field(description="Tokens generated (count).")
    abstain: bool = Field(default=False, description=ABSTAIN)
    ood_score: float | None = Field(default=None, description=OOD_SCORE)
    out_of_distribution: bool = Field(default=False, description=OUT_OF_DISTRIBUTION)
    abstain_reason: AbstainReason | None = Field(default=None, description=ABSTAIN_REASON)


# One prediction type per task.
PredictionOut = SentimentPredictionOut | TranslationPredictionOut | GenerationPredictionOut


class PredictResponse(BaseModel):
    """`POST /predict` result: predictions in the order of the request's texts."""

    task: str = Field(description="The task of the model that ran.")
    model: ModelRef = Field(description="Which model and artifact version answered.")
    mc_samples: int = Field(description="T actually used (the request's, or the default when it gave none).")
    seed: int = Field(description="Dropout-mask seed actually used (the request's, or the one the server drew); "
                      "send it back to reproduce this response.")
    predictions: list[PredictionOut] = Field(description="One per input text, same order.")


class ErrorBody(BaseModel):
    """Every error response (4xx/5xx) has this body."""

    error: str = Field(description="Human-readable message.")
    error_type: str = Field(description="Stable machine-readable kind, e.g. `queue_full`, `timeout`.")


ModelStateName = Literal["pending", "loading", "training", "ready", "failed"]
STATE = ("pending (configured, not yet looked at), loading, training (no artifact yet; `python -m training.ensure` "
         "is training it: served as soon as its artifact is written), ready (serving), failed (see `error`).")


class ModelState(BaseModel):
    task: str | None = Field(default=None, description="The model's task.")
    state: ModelStateName = Field(description=STATE)
    version: str | None = Field(default=None, description="Artifact version serving (or loading), once known.")
    error: str | None = Field(default=None, description="Why it is not serving (failed, training).")
    queued_items: int | None = Field(default=None, description="Items waiting in the model's queue (count).")


class ReadinessResponse(BaseModel):
    """`GET /health/ready`: 200 when every configured model is loaded and warmed and not draining, else 503."""

    status: Literal["ready", "loading", "degraded", "draining"] = Field(
        description="ready; loading (models still loading); degraded (a model failed: see `models`); draining.")
    models: dict[str, ModelState] = Field(description="State of each configured model, by model name.")
    error: str | None = Field(default=None, description="Summary of what is missing (503 only).")
    error_type: str | None = Field(default=None, description="`not_ready` or `draining` (503 only).")


class LivenessResponse(BaseModel):
    status: Literal["live"] = "live"


class ModelSummary(BaseModel):
    name: str = Field(description="Model name: `model` in POST /predict (a task's default model is named after "
                      "the task).")
    task: str = Field(description="Its task (`task` in POST /predict picks the task's default model).")
    state: ModelStateName = Field(description=STATE)
    version: str | None = Field(default=None, description="Artifact version serving (or loading).")
    device: str | None = Field(default=None, description="torch device, e.g. cpu or cuda.")
    dtype: str | None = Field(default=None, description="Compute dtype, e.g. bfloat16.")
    error: str | None = Field(default=None, description="Why it is not serving (failed, training).")
    reload_error: str | None = Field(default=None, description="Why the newest version did not load; `version` "
                                     "keeps serving (null when the newest version serves).")
    failed_version: str | None = Field(default=None, description="The version that did not load.")
    swaps: int = Field(default=0, description="New versions swapped in while serving (count).")


class ModelList(BaseModel):
    models: list[ModelSummary]


class ReloadResponse(BaseModel):
    """`POST /models/{name}/reload`: what the reload did (a failed one answers 422 `reload_failed`)."""

    name: str = Field(description="Model name.")
    result: Literal["swapped", "loaded", "unchanged"] = Field(
        description="swapped: a newer version now serves new requests (the old one finishes its queue); loaded: "
        "the model's first version now serves; unchanged: the newest complete version already serves.")
    version: str | None = Field(description="Version serving now.")
    previous_version: str | None = Field(default=None, description="Version served before a swap.")


class ModelDetail(ModelSummary):
    """`GET /models/{name}`: the summary plus manifest facts, batching limits and the predictor's own view."""

    batching: dict[str, int | float] = Field(default_factory=dict, description="max_batch_size (items), "
                                       "max_batch_tokens (cost units), max_wait_ms (ms), max_queue (items).")
    mc: dict[str, Any] = Field(default_factory=dict, description="default_samples and cap (counts), and the "
                               "settings' last_k / dropout_sites overrides (null = the manifest's default; the "
                               "effective values are under `predictor`).")
    manifest: dict[str, Any] = Field(default_factory=dict, description="Artifact manifest summary.")
    predictor: dict[str, Any] = Field(default_factory=dict, description="The predictor's `describe()`.")
