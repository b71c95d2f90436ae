"""Service settings: one pydantic-settings object, read from `NLP_*` environment variables.

Nothing here runs at import time: `Settings()` reads the environment when *called* (by `python -m service`
or a test), and the result is passed explicitly into `create_app(settings)`.

Scalar fields map to one variable each (`NLP_PORT=8080`, `NLP_MAX_BATCH_SIZE=1`). Lists accept a comma
list or JSON (`NLP_MODELS=sentiment,support-tickets`, `NLP_TASKS=sentiment,translation`). Per-model maps, keyed
by model name or by task (a name's entry wins), take JSON
(`NLP_VERSIONS='{"support-tickets": "20250101T000000Z-abc123"}'`) or nested variables with a double
underscore (`NLP_BATCHING__SENTIMENT__MAX_BATCH_SIZE=8`, `NLP_MC_LAST_K__SENTIMENT=2`; a name with a hyphen
needs the JSON form).

Units are in the field names: `_ms` milliseconds, `_s` seconds, `_bytes` bytes; "items" are single texts
(a client list of n texts counts n items), "tokens" are tokenizer tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
MC_SITES = frozenset({"hidden", "attention", "head"})
Backend = Literal["torch", "onnxruntime"]


class BatchLimits(BaseModel):
    """Resolved dynamic-batching limits of one model (see `Settings.batch_limits`)."""

    max_batch_size: int = Field(ge=1, description="Most items (single texts) in one forward batch.")
    max_batch_tokens: int = Field(ge=1, description="Token budget of one batch, summed `predictor.cost` units.")
    max_wait_ms: float = Field(ge=0, description="Longest a queued item waits for its batch to fill, ms.")
    max_queue: int = Field(ge=1, description="Most items waiting in the queue; beyond it requests get 429.")


class BatchOverrides(BaseModel):
    """Per-model overrides of the global batching limits; unset fields inherit the global value."""

    max_batch_size: int | None = Field(default=None, ge=1)
    max_batch_tokens: int | None = Field(default=None, ge=1)
    max_wait_ms: float | None = Field(default=None, ge=0)
    max_queue: int | None = Field(default=None, ge=1)


def _split_list(value: Any) -> Any:
    """Accept `a,b` as well as a JSON list from the environment (NoDecode hands us the raw string)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import json

            return json.loads(stripped)
        return [part.strip() for part in stripped.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything the server can be told. Pass an instance to `create_app`; defaults suit a 2-core CPU."""

    model_config = SettingsConfigDict(
        env_prefix="NLP_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
    )

    # --- network -------------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 inside a container.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto", description="Event loop of the HTTP server; auto = uvloop when installed (a serving "
        "dependency), else asyncio.")
    http_parser: Literal["auto", "h11", "httptools"] = Field(
        default="auto", description="HTTP/1.1 implementation; auto = httptools (C parser) when installed, else h11.")
    keep_alive_s: int = Field(
        default=75, ge=1, description="Seconds an idle keep-alive connection stays open. Longer than clients' "
        "pool expiry (httpx 5 s) and load balancers' idle timeout (60 s), so the server never closes a connection "
        "as a client reuses it (the client would see a reset, the request lost); uvicorn's own default is 5 s.")

    # --- which models ----------------------------------------------------------------------------------
    artifacts_dir: Path = Field(default=Path("artifacts"), description="Root holding <name>/<version>/.")
    models: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Model names to serve (directories under artifacts_dir). None (and no `tasks`) = every model "
        "with a complete artifact, including models that appear while serving. A listed model without a loadable "
        "artifact keeps readiness at 503 (the others still serve) and loads as soon as its artifact appears.",
    )
    tasks: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Tasks whose default model (the one named after the task) to serve, added to `models`; "
        "None = see `models`. A listed task without a loadable artifact keeps readiness at 503.",
    )
    versions: dict[str, str] = Field(
        default_factory=dict, description="Pinned version id per model name; a pinned model is never hot-swapped. "
        "Unpinned models load their newest complete version."
    )
    poll_interval_s: float = Field(
        default=10.0, ge=0, description="Seconds between looks at artifacts_dir for new complete versions of the "
        "served models (and new models, when none are listed), each loaded, warmed and swapped in without "
        "downtime; 0 = off (POST /models/{name}/reload still works)."
    )

    # --- device --------------------------------------------------------------------------------------
    device: Device = Field(default="auto", description="auto = cuda when available, else cpu.")
    dtype: DType = Field(
        default="auto",
        description="Compute dtype. auto = bfloat16 on CUDA (float16 where bf16 is unsupported); on CPU "
        "bfloat16 only where the processor has fast bf16 units (AMX or AVX512-BF16), else float32.",
    )
    torch_threads: int | None = Field(default=None, ge=1, description="torch intra-op threads; None = torch's.")
    inference_workers: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] = Field(
        default="auto", description="Batches of one model that may run at once, each on its own inference thread "
        "with torch_threads / inference_workers intra-op threads (at least 1). Only models whose predictor allows "
        "it (sentiment's fast path) run more than one; others keep one. auto = 2 on CPU with 2 or more torch "
        "threads (two one-thread batches beat one two-thread batch on a small CPU shared with the event loop: "
        "README, \"Benchmarks\"), 1 on CUDA.")
    backend: Backend = Field(
        default="torch", description="What runs the models' forward passes: torch, or onnxruntime (CPU, "
        "sentiment only: the last-k MC graph exported at load, same seeds and answers within float rounding; "
        "needs the `onnx` extra). Per model: `backends`.")
    backends: dict[str, Backend] = Field(default_factory=dict, description="Per-model (name, else task) backends.")
    onnx_models: dict[str, str] = Field(
        default_factory=dict, description="Per model (name, else task): an exported MC graph (.onnx, e.g. an "
        "export package's int8 model, `python -m training.export`) for the onnxruntime backend to run instead of "
        "exporting one at load.")

    # --- batching (global defaults, per-model overrides) -----------------------------------------------
    max_batch_size: int = Field(default=32, ge=1, description="Items per batch (a list counts per item).")
    max_batch_tokens: int = Field(default=16384, ge=1, description="Token budget per batch (predictor.cost).")
    max_wait_ms: float = Field(default=5.0, ge=0, description="Batch fill window, milliseconds.")
    max_queue: int = Field(default=256, ge=1, description="Queued items per model before 429.")
    batching: dict[str, BatchOverrides] = Field(default_factory=dict,
                                                description="Per-model (by name, else by task) overrides.")

    # --- Monte-Carlo dropout ---------------------------------------------------------------------------
    mc_samples_default: int | None = Field(
        default=None, ge=0, description="T when a request omits mc_samples; None = the model's manifest default."
    )
    mc_samples_cap: int = Field(default=64, ge=0, description="Largest mc_samples a request may ask for.")
    mc_last_k: dict[str, int] = Field(
        default_factory=dict, description="Per model (name, else task): top layers run stochastically; unset = "
        "the manifest's default."
    )
    mc_dropout_sites: dict[str, Annotated[list[str], NoDecode]] = Field(
        default_factory=dict, description="Per model (name, else task): dropouts live at MC time, subset of "
        "hidden/attention/head."
    )

    # --- request limits --------------------------------------------------------------------------------
    max_payload_bytes: int = Field(default=1_048_576, ge=1, description="Largest request body, bytes (413).")
    max_items_per_request: int = Field(default=64, ge=1, description="Most texts in one request (422).")
    max_chars_per_text: int = Field(default=20_000, ge=1, description="Longest text, characters (422).")
    max_input_tokens: int | None = Field(
        default=None, ge=1, description="Token limit handed to predictors; None = each model's own limit."
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="Queue + inference time before 504.")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="SIGTERM: longest wait for in-flight work.")

    # --- security and logs -----------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        default=None, description="When set, /predict and /models need `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>`; health, metrics and the schema stay open unless given their own keys below."
    )
    health_api_key: SecretStr | None = Field(
        default=None, description="When set, /health/* needs this key (same headers); None = open for probes."
    )
    metrics_api_key: SecretStr | None = Field(
        default=None, description="When set, /metrics needs this key (same headers); None = open for scrapers."
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma list; `*` = any). Empty (the "
        "default) = CORS off: no Access-Control-* headers, so browsers on other origins cannot read answers."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(default="info")

    # --- playground and OpenAI-compatible API ----------------------------------------------------------
    playground: bool = Field(default=True, description="Serve the playground page at / (static files of the "
                             "package, nothing fetched from elsewhere); its API calls need the API key as usual.")
    max_top_logprobs: int | None = Field(
        default=None, ge=1, description="Largest `top_logprobs` (chat) / `logprobs` (completions) a /v1 request "
        "may ask for; None = the vocabulary size (OpenAI's own cap of 20 does not apply here).")

    @field_validator("models", "tasks", "cors_allow_origins", mode="before")
    @classmethod
    def _list_from_text(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("mc_dropout_sites", mode="before")
    @classmethod
    def _sites_from_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {task: _split_list(sites) for task, sites in value.items()}
        return value

    @field_validator("mc_dropout_sites")
    @classmethod
    def _known_sites(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for task, sites in value.items():
            unknown = set(sites) - MC_SITES
            if unknown:
                raise ValueError(f"mc_dropout_sites[{task}]: unknown sites {sorted(unknown)}; use {sorted(MC_SITES)}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @staticmethod
    def _per_model(values: dict[str, Any], name: str, task: str) -> Any:
        """A per-model map's entry: by model name first, else by task (so `NLP_MC_LAST_K__SENTIMENT` still applies
        to every sentiment model that has no entry of its own)."""
        return values[name] if name in values else values.get(task)

    def batch_limits(self, name: str, task: str | None = None) -> BatchLimits:
        """The batching limits of model `name` (of `task`): its overrides on top of the global defaults."""
        override = self._per_model(self.batching, name, task or name) or BatchOverrides()
        return BatchLimits(
            max_batch_size=override.max_batch_size or self.max_batch_size,
            max_batch_tokens=override.max_batch_tokens or self.max_batch_tokens,
            max_wait_ms=self.max_wait_ms if override.max_wait_ms is None else override.max_wait_ms,
            max_queue=override.max_queue or self.max_queue,
        )

    def backend_for(self, name: str, task: str | None = None) -> str:
        """The backend that runs model `name`: its override (by name, else task), else the global one."""
        return self._per_model(self.backends, name, task or name) or self.backend

    def dropout_sites(self, name: str, task: str | None = None) -> frozenset[str] | None:
        """MC-time dropout sites of model `name`, or None for the manifest's default."""
        sites = self._per_model(self.mc_dropout_sites, name, task or name)
        return None if sites is None else frozenset(sites)

    def last_k(self, name: str, task: str | None = None) -> int | None:
        """MC last-k of model `name`, or None for the manifest's default."""
        return self._per_model(self.mc_last_k, name, task or name)

    def onnx_model(self, name: str, task: str | None = None) -> str | None:
        """An exported MC graph for model `name` (onnxruntime backend), or None to export one at load."""
        return self._per_model(self.onnx_models, name, task or name)
