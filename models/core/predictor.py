"""The seam between models and the service: one predictor per task, same method names in all three.

A predictor owns a loaded model, its tokenizer and its calibration. The service never touches torch:
it calls `prepare` on the event loop (cheap: tokenise + validate, raises `InputError`), queues the
prepared items, and calls `predict` on a worker thread with a batch of them.

Contract for `predict`:
- `items` are prepared by this predictor; each carries its own `MCRequest` (samples T and seed).
  Items with different T may share a batch; the predictor folds all T copies into one forward.
- returns one prediction per item, in order; raises on a failure of the whole batch (the service
  fails that batch's requests only).
- T = 0 is deterministic: no dropout, no uncertainty (`uncertainty is None`), same output every call.
- T = 1 is served as T = 0 (`served_samples`): one dropout sample cannot disagree with itself, so its
  "uncertainty" would read as perfect agreement (MI 0, D-Var 0); every task returns `uncertainty: None`.
- the same (text, T, seed) gives the same prediction whatever else shares the batch (up to float
  rounding of different padding), because dropout masks are drawn per item from its own seed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

MIN_MC_SAMPLES = 2  # the fewest dropout samples whose disagreement measures anything


class InputError(ValueError):
    """A request that parses but breaks a limit (empty, too long, bad parameter): HTTP 422."""


def served_samples(mc_samples: int) -> int:
    """T as a predictor runs it: T < MIN_MC_SAMPLES (0 or 1) is deterministic (module docstring)."""
    return mc_samples if mc_samples >= MIN_MC_SAMPLES else 0


@dataclass(frozen=True)
class MCRequest:
    """How to sample one item: `mc_samples` T (0 = deterministic) and the `seed` of its dropout masks (and,
    for generation, of its token sampling). `text_sink`, for tasks that stream (generation), receives the
    output text in pieces, on the worker thread, as it is decoded; the pieces join into the final text."""

    mc_samples: int
    seed: int
    text_sink: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PredictorOptions:
    """Serving-time choices for a predictor; the service builds this from its settings.

    - `device`: torch device string ("cpu", "cuda", "cuda:0").
    - `dtype`: "float32", "bfloat16" or "float16" (compute dtype under autocast).
    - `mc_last_k`: how many top layers run stochastically; None = the manifest's default; a value
      >= the number of layers means full MC (embeddings dropout included).
    - `mc_dropout_sites`: which dropouts are live at MC time, subset of {"hidden", "attention", "head"};
      None = the manifest's default.
    - `max_input_tokens`: refuse (sentiment: truncate head+tail to) this many tokens; None = model's limit.
    - `backend`: what runs the batched forward: "torch", or "onnxruntime" (CPU; sentiment only, see
      models/registry.py); `onnx_model`: an exported graph to run instead of exporting one at load.
    """

    device: str = "cpu"
    dtype: str = "float32"
    mc_last_k: int | None = None
    mc_dropout_sites: frozenset[str] | None = None
    max_input_tokens: int | None = None
    backend: str = "torch"
    onnx_model: str | None = None


@dataclass(frozen=True)
class PreparedItem:
    """One validated, tokenised input waiting in a queue. `n_tokens` drives length grouping."""

    text: str
    input_ids: tuple[int, ...]
    n_tokens: int
    truncated: bool = False
    parameters: Mapping[str, Any] = field(default_factory=dict)


# Every prediction's OOD fields (models/core/ood.py), at any T: `ood_score` = distance of the input's features to
# the training data's / the validation threshold (> 1 = `out_of_distribution`; None when the artifact has no OOD
# statistics); `abstain` is true when the input is out of distribution or the calibrated uncertainty passes the
# abstain rule, `abstain_reason` says which ("out_of_distribution" first, then "uncertain"; None when not abstaining).


@dataclass(frozen=True)
class ClassificationUncertainty:
    """MC-dropout uncertainty of one classification, natural logs (nats)."""

    predictive_entropy: float
    expected_entropy: float
    mutual_information: float
    variation_ratio: float
    probability_std: float


@dataclass(frozen=True)
class SentimentPrediction:
    """One sentiment prediction; `uncertainty` is None when T = 0. OOD fields as the
    comment above ClassificationUncertainty says."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    uncertainty: ClassificationUncertainty | None
    abstain: bool
    input_tokens: int
    truncated: bool
    ood_score: float | None = None
    out_of_distribution: bool = False
    abstain_reason: str | None = None


@dataclass(frozen=True)
class SequenceUncertainty:
    """MC-dropout uncertainty of one output sequence scored under T masks (models/core/sequence_uncertainty.py).
    Log-probabilities are sums over the output's tokens in nats, `*_per_token` the same divided by the
    output's length (the variance by its square); `sampling_chrf` only in "sampling" mode."""

    sequence_log_prob: float
    mc_log_prob_mean: float
    mc_log_prob_var: float
    sequence_log_prob_per_token: float
    mc_log_prob_mean_per_token: float
    mc_log_prob_var_per_token: float
    mean_token_entropy: float
    mean_token_mutual_information: float
    max_token_mutual_information: float
    sampling_chrf: float | None = None


@dataclass(frozen=True)
class ScoredOutput:
    """A fixed output (e.g. a reference) scored teacher-forced through a sequence predictor's serving pass
    (`score`): per output token [n], from the deterministic distribution after τ, the output token's
    log-probability, the argmax token, its log-probability and the entropy (nats); under T > 0 masks the
    calibrated log-distributions `mc_log_probs` [T, n, V] (on the model's device), the sequence uncertainty and
    the abstain decision; None / False at T = 0."""

    det_log_probs: list[float]
    det_top: list[int]
    det_top_log_probs: list[float]
    det_entropies: list[float]
    mc_log_probs: Any = None  # torch.Tensor; typed Any so this module needs no torch
    uncertainty: SequenceUncertainty | None = None
    abstain: bool = False


@dataclass(frozen=True)
class TopToken:
    """One alternative at an output position: its text and log-probability (nats, after τ)."""

    token: str
    logprob: float


@dataclass(frozen=True)
class TokenScore:
    """One output token: its text, MC mean probability, predictive entropy (nats) and MI (nats, None when T < 2);
    `top_logprobs`, when asked, the k most likely tokens at its position, most likely first, from the same
    distribution as `probability` (the MC mean when T ≥ 2, else the deterministic one)."""

    token: str
    probability: float
    entropy: float
    mutual_information: float | None
    top_logprobs: tuple[TopToken, ...] | None = None


@dataclass(frozen=True)
class TranslationPrediction:
    """One translation; `uncertainty` is None when T = 0; `tokens` only when asked (`return_tokens`); OOD fields
    as the comment above ClassificationUncertainty says."""

    translation: str
    uncertainty: SequenceUncertainty | None
    tokens: list[TokenScore] | None
    finish_reason: str
    input_tokens: int
    output_tokens: int
    abstain: bool = False
    output_ids: tuple[int, ...] = field(default=(), repr=False)  # for evaluations; not served
    ood_score: float | None = None
    out_of_distribution: bool = False
    abstain_reason: str | None = None


@dataclass(frozen=True)
class GenerationPrediction:
    """One continuation; `text` excludes the prompt (and a stop string); `uncertainty` is None when T = 0;
    `tokens` only when asked. `finish_reason` is "eos", "stop" or "length". Timings are seconds from the
    start of the batch the item ran in. OOD fields as the
    comment above ClassificationUncertainty says."""

    text: str
    uncertainty: SequenceUncertainty | None
    tokens: list[TokenScore] | None
    finish_reason: str
    input_tokens: int
    output_tokens: int
    first_token_seconds: float | None = field(compare=False)
    decode_seconds: float = field(compare=False)
    abstain: bool = False
    output_ids: tuple[int, ...] = field(default=(), repr=False)  # for evaluations; not served
    ood_score: float | None = None
    out_of_distribution: bool = False
    abstain_reason: str | None = None


@runtime_checkable
class Predictor(Protocol):
    """What the service needs from every task's predictor (see module docstring)."""

    task: ClassVar[str]
    name: str
    version: str
    default_mc_samples: int
    # Optional, not declared here: `concurrent_batches` (bool), True when `predict` may run on two threads at
    # once; the service reads it with getattr and a default of False (models/core/base.py).

    def prepare(self, text: str, parameters: Mapping[str, Any]) -> PreparedItem:
        """Validate and tokenise one input; raises InputError with a message for the client."""
        ...

    def batch_key(self, item: PreparedItem) -> Hashable:
        """Items may share a batch only when their keys are equal (sentiment: always)."""
        ...

    def cost(self, item: PreparedItem, request: MCRequest) -> int:
        """Token rows this item adds to a forward pass, for the batcher's token budget."""
        ...

    def predict(self, items: Sequence[PreparedItem], requests: Sequence[MCRequest]) -> list[Any]:
        """Run one batch (see module docstring); len(result) == len(items)."""
        ...

    def warmup(self) -> None:
        """Run a real forward (deterministic and MC) so the first request pays no lazy init."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for GET /models/{name}: device, dtype, dropout placement, MC mode, limits."""
        ...
