"""Prometheus metrics of docs/architecture.md §7, all on one `CollectorRegistry` per app.

Every metric is declared once, in `ServiceMetrics.__init__` below, and bound to the registry it is given,
so each `create_app` (each test) gets its own counters without "duplicated timeseries" errors, and
`GET /metrics` exposes exactly that registry. Label values are only task names (from the fixed task
list, never the raw request field), model names (of the served models, which come from the artifacts
directory and the settings, never from a request: a name no model has is recorded as `unknown`), status
codes, reasons and model facts: never request text or ids. Every per-model series carries both `task` and
`model` (`Labels`), so dashboards can sum by task as before or split by model.

Units follow Prometheus conventions: seconds, counts, nats (natural-log entropy) and tokens.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Labels = tuple[str, str]  # (task, model): the label values of every per-model series
ABSTAIN_REASONS = ("out_of_distribution", "uncertain")  # models/core/ood.REASONS (service does not import models)

# Latency buckets span a cached 5 ms deterministic call to a 60 s generation under load.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_MC = (0, 1, 2, 5, 10, 20, 30, 50, 100)
# Entropy in nats: ln 2 = 0.69 is the two-class maximum; token entropies of an LM reach a few nats.
_ENTROPY = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0, 2.0, 4.0, 8.0)
# Mutual information is usually an order of magnitude smaller than the entropy.
_MI = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# OOD score = distance to the training data / the validation threshold: 1 is the flag line (models/core/ood.py).
_OOD = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
_TOKENS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# Decoding time per generated token: ~1 ms for a small model on a GPU to ~1 s for a large batch on a CPU.
_PER_TOKEN = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServiceMetrics:
    """The service's metrics bound to `registry` (a fresh one when None). Thread-safe (prometheus_client)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "nlp_requests_total", "Finished /predict requests by task, model and HTTP status.",
            ["task", "model", "status"], registry=r,
        )
        self.request_duration = Histogram(
            "nlp_request_duration_seconds", "Time from request parsed to response ready, seconds.", ["task", "model"],
            buckets=_SECONDS, registry=r,
        )
        self.queue_duration = Histogram(
            "nlp_queue_duration_seconds", "Time an item waited in its model queue, seconds.", ["task", "model"],
            buckets=_SECONDS, registry=r,
        )
        self.inference_duration = Histogram(
            "nlp_inference_duration_seconds", "Time of one batch's forward (all MC samples), seconds.",
            ["task", "model"],
            buckets=_SECONDS, registry=r,
        )
        self.batch_size = Histogram(
            "nlp_batch_size", "Items (single texts) per executed batch.", ["task", "model"], buckets=_BATCH, registry=r
        )
        self.queue_size = Gauge("nlp_queue_size", "Items waiting in the model queue.", ["task", "model"], registry=r)
        self.rejected = Counter(
            "nlp_rejected_requests_total", "Requests refused before inference, by reason.", ["task", "model", "reason"],
            registry=r,
        )
        self.mc_samples = Histogram(
            "nlp_mc_samples", "Monte-Carlo samples T per request (0 = deterministic).", ["task", "model"], buckets=_MC,
            registry=r,
        )
        self.entropy = Histogram(
            "nlp_prediction_entropy", "Predictive entropy per prediction, nats (MC requests only).", ["task", "model"],
            buckets=_ENTROPY, registry=r,
        )
        self.mutual_information = Histogram(
            "nlp_prediction_mutual_information", "Mutual information (epistemic) per prediction, nats.",
            ["task", "model"],
            buckets=_MI, registry=r,
        )
        self.abstentions = Counter(
            "nlp_abstentions_total", "Predictions flagged abstain=true, by abstain_reason (out_of_distribution at "
            "any mc_samples, uncertain at mc_samples >= 2).", ["task", "model", "reason"], registry=r
        )
        self.ood_score = Histogram(
            "nlp_ood_score", "Out-of-distribution score per prediction (distance to the training data / the "
            "validation threshold; > 1 = out of distribution), at every mc_samples.", ["task", "model"], buckets=_OOD,
            registry=r,
        )
        self.out_of_distribution = Counter(
            "nlp_out_of_distribution_total", "Predictions flagged out_of_distribution=true.", ["task", "model"],
            registry=r,
        )
        self.input_tokens = Histogram(
            "nlp_input_tokens", "Tokens per input item after tokenisation.", ["task", "model"], buckets=_TOKENS,
            registry=r,
        )
        self.generated_tokens = Counter(
            "nlp_generated_tokens_total", "Tokens produced by sequence models.", ["task", "model"], registry=r
        )
        self.time_to_first_token = Histogram(
            "nlp_time_to_first_token_seconds", "Time from request parsed to its first generated token, seconds.",
            ["task", "model"], buckets=_SECONDS, registry=r,
        )
        self.time_per_output_token = Histogram(
            "nlp_time_per_output_token_seconds", "Decoding time per generated token after the first, seconds.",
            ["task", "model"], buckets=_PER_TOKEN, registry=r,
        )
        self.model_info = Gauge(
            "nlp_model_info", "1 for each loaded model, labelled with its facts.",
            ["task", "model", "version", "device", "dtype"], registry=r,
        )
        self.model_loaded = Gauge("nlp_model_loaded", "1 when the model is loaded and warmed (serving).",
                                  ["task", "model"], registry=r)
        self.model_reloads = Counter(
            "nlp_model_reloads_total", "New versions of a served model tried while serving: result `swapped` (now "
            "serving) or `failed` (the previous version keeps serving; GET /models/{name} says why).",
            ["task", "model", "result"], registry=r,
        )
        self.gpu_memory_allocated = Gauge(
            "nlp_gpu_memory_allocated_bytes", "CUDA memory held by tensors, bytes.", ["device"], registry=r
        )
        self.gpu_memory_reserved = Gauge(
            "nlp_gpu_memory_reserved_bytes", "CUDA memory reserved by the caching allocator, bytes.", ["device"],
            registry=r,
        )

    # --- batcher-facing (see service.batcher.BatchObserver) ---------------------------------------------
    def observe_batch(self, labels: Labels, size: int, queue_waits_s: list[float], inference_s: float) -> None:
        """One executed batch: its item count, each item's queue wait and the forward's wall time."""
        self.batch_size.labels(*labels).observe(size)
        queue = self.queue_duration.labels(*labels)
        for wait in queue_waits_s:
            queue.observe(wait)
        self.inference_duration.labels(*labels).observe(inference_s)

    def track_queue(self, labels: Labels, read_size: Callable[[], float]) -> None:
        """Read the queue size at scrape time, so the gauge is never stale."""
        self.queue_size.labels(*labels).set_function(read_size)

    # --- request-facing -------------------------------------------------------------------------------
    def observe_request(self, labels: Labels, status: int, seconds: float | None) -> None:
        """A finished /predict request; `seconds` None for requests refused before timing started."""
        self.requests.labels(*labels, str(status)).inc()
        if seconds is not None:
            self.request_duration.labels(*labels).observe(seconds)

    def observe_rejection(self, labels: Labels, reason: str) -> None:
        self.rejected.labels(*labels, reason).inc()

    def observe_inputs(self, labels: Labels, mc_samples: int, token_counts: list[int]) -> None:
        self.mc_samples.labels(*labels).observe(mc_samples)
        tokens = self.input_tokens.labels(*labels)
        for count in token_counts:
            tokens.observe(count)

    def observe_uncertainty(self, labels: Labels, entropy: float, mutual_information: float) -> None:
        self.entropy.labels(*labels).observe(entropy)
        self.mutual_information.labels(*labels).observe(mutual_information)

    def observe_abstain(self, labels: Labels, reason: str | None) -> None:
        """One prediction's abstain_reason (None: it did not abstain). Only the two reasons the predictors give
        (models/core/ood.REASONS) become label values; anything else is a bug, refused here."""
        if reason is None:
            return
        if reason not in ABSTAIN_REASONS:
            raise ValueError(f"unknown abstain reason {reason!r}")
        self.abstentions.labels(*labels, reason).inc()

    def observe_ood(self, labels: Labels, score: float | None, flagged: bool) -> None:
        """One prediction's OOD score (None: the model has no OOD statistics, nothing to record)."""
        if score is None:
            return
        self.ood_score.labels(*labels).observe(score)
        if flagged:
            self.out_of_distribution.labels(*labels).inc()

    def observe_generated(self, labels: Labels, tokens: int) -> None:
        self.generated_tokens.labels(*labels).inc(tokens)

    def observe_token_timing(self, labels: Labels, first_token_s: float, per_token_s: float | None) -> None:
        """Time to first token and mean time per output token (None for a one-token output)."""
        self.time_to_first_token.labels(*labels).observe(first_token_s)
        if per_token_s is not None:
            self.time_per_output_token.labels(*labels).observe(per_token_s)

    # --- runtime-facing -------------------------------------------------------------------------------
    def set_model(self, labels: Labels, loaded: bool, version: str = "", device: str = "", dtype: str = "") -> None:
        """Publish a model's state: loaded 1/0 and, when loaded, one info series with its facts."""
        self.model_loaded.labels(*labels).set(1 if loaded else 0)
        if loaded:
            self.model_info.labels(*labels, version, device, dtype).set(1)
            # The OOD series exist from load on, so the drift ratio reads 0, not "no data", before a flag.
            self.ood_score.labels(*labels)
            self.out_of_distribution.labels(*labels)

    def clear_model_info(self, labels: Labels, version: str, device: str, dtype: str) -> None:
        """Drop a replaced version's info series (after a hot swap), so one series per model stays at 1."""
        self.model_info.remove(*labels, version, device, dtype)

    def observe_reload(self, labels: Labels, swapped: bool) -> None:
        """A new version was loaded and now serves (`swapped`), or failed and the old one keeps serving."""
        self.model_reloads.labels(*labels, "swapped" if swapped else "failed").inc()

    def track_gpu(self, device: str, read: Callable[[], tuple[float, float]]) -> None:
        """Expose CUDA memory of `device`, read at scrape time (only called when serving on CUDA)."""
        self.gpu_memory_allocated.labels(device).set_function(lambda: read()[0])
        self.gpu_memory_reserved.labels(device).set_function(lambda: read()[1])
