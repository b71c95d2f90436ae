"""The registry of loaded models: discovery, loading, warm-up, readiness, drain.

Contract:
- `start()` (called from the app's startup) spawns loading in the background, so the server answers
  `/health/*` while models load. Each configured task goes pending → loading → ready | failed; a failure
  is recorded with its reason and the other tasks keep loading and serving.
- Configured tasks are `settings.tasks` when given, else every known task with at least one complete
  artifact (or a pinned version). A task loads its pinned version or its newest complete artifact.
- Loading and warm-up (a real forward pass) run on worker threads; a model is ready only after warm-up.
- `ready` is True when at least one task is configured, every configured task is ready, and the runtime
  is not draining. `drain(timeout)` turns readiness off and waits for in-flight requests to finish.
- All inference shares one single-thread executor: on a CPU, two models' forwards at once would only
  fight over the same cores, and one stream of work keeps a GPU's memory predictable too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.core.artifacts import list_artifacts, read_manifest, resolve_artifact
from models.core.predictor import Predictor, PredictorOptions
from service import devices
from service.batcher import Batcher
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger(__name__)

Loader = Callable[[Path, PredictorOptions], Predictor]
SlotState = Literal["pending", "loading", "ready", "failed"]
# Manifest sections worth showing on GET /models/{name} (the file list and training config are long).
_MANIFEST_FIELDS = ("version", "created_at", "model_class", "labels", "default_mc_samples", "dropout",
                    "calibration", "metrics", "libraries")


@dataclass
class ModelSlot:
    """One configured task and what became of it."""

    task: str
    state: SlotState = "pending"
    error: str | None = None
    artifact: Path | None = None
    version: str | None = None
    predictor: Predictor | None = None
    batcher: Batcher | None = None
    options: PredictorOptions | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def _default_loader() -> tuple[Loader, tuple[str, ...]]:
    # Imported lazily so the service (and its tests with fake predictors) import without torch models.
    from models.registry import TASKS, load_predictor

    return load_predictor, tuple(TASKS)


class Runtime:
    """Loaded predictors and their batchers, by task (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: ServiceMetrics | None = None,
        loader: Loader | None = None,
        known_tasks: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else ServiceMetrics()
        if loader is None or known_tasks is None:
            default_loader, default_tasks = _default_loader()
            loader = loader or default_loader
            known_tasks = known_tasks if known_tasks is not None else default_tasks
        self._loader = loader
        self.known_tasks: tuple[str, ...] = tuple(known_tasks)
        self.slots: dict[str, ModelSlot] = {}
        self.problem: str | None = None  # runtime-wide reason for not being ready (e.g. no artifacts)
        self.device: str | None = None
        self.dtype: str | None = None
        self.draining = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlp-infer")
        self._loading: asyncio.Task[None] | None = None
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- discovery -----------------------------------------------------------------------------------
    def configured_tasks(self) -> list[str]:
        """Tasks this server should serve (see module docstring)."""
        if self.settings.tasks:
            return list(dict.fromkeys(self.settings.tasks))
        root = self.settings.artifacts_dir
        return [t for t in self.known_tasks if t in self.settings.versions or list_artifacts(root, t)]

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Record the configured tasks and start loading them in the background (returns at once)."""
        tasks = self.configured_tasks()
        self.slots = {task: ModelSlot(task) for task in tasks}
        if not tasks:
            self.problem = f"no model artifacts found under {self.settings.artifacts_dir}"
            log.error("%s; readiness stays 503", self.problem)
            return
        self._loading = asyncio.get_running_loop().create_task(self._load_all(), name="load-models")

    async def wait_loaded(self) -> None:
        """Wait until every configured task is ready or failed (for tests and the CLI)."""
        if self._loading is not None:
            await asyncio.shield(self._loading)

    async def _load_all(self) -> None:
        try:
            devices.set_torch_threads(self.settings.torch_threads)
            self.device = devices.resolve_device(self.settings.device)
            self.dtype = devices.resolve_dtype(self.settings.dtype, self.device)
        except Exception as exc:
            for slot in self.slots.values():
                self._fail(slot, f"device setup failed: {exc}")
            return
        log.info("serving on device=%s dtype=%s", self.device, self.dtype)
        if self.device.startswith("cuda"):
            device = self.device
            self.metrics.track_gpu(device, lambda: devices.gpu_memory_bytes(device))
        for slot in self.slots.values():
            self.metrics.set_model(slot.task, loaded=False)
        for slot in self.slots.values():
            await self._load_one(slot)

    async def _load_one(self, slot: ModelSlot) -> None:
        if slot.task not in self.known_tasks:
            self._fail(slot, f"unknown task {slot.task!r}; known tasks: {', '.join(self.known_tasks)}")
            return
        slot.state = "loading"
        settings = self.settings
        try:
            slot.artifact = resolve_artifact(settings.artifacts_dir, slot.task, settings.versions.get(slot.task))
            manifest = read_manifest(slot.artifact)
            slot.version = manifest.version
            slot.manifest = {name: getattr(manifest, name) for name in _MANIFEST_FIELDS}
            slot.options = PredictorOptions(
                device=self.device or "cpu",
                dtype=self.dtype or "float32",
                mc_last_k=settings.mc_last_k.get(slot.task),
                mc_dropout_sites=settings.dropout_sites(slot.task),
                max_input_tokens=settings.max_input_tokens,
                backend=settings.backend_for(slot.task),
                onnx_model=settings.onnx_models.get(slot.task),
            )
            log.info("loading %s from %s", slot.task, slot.artifact)
            predictor = await asyncio.to_thread(self._loader, slot.artifact, slot.options)
            await asyncio.get_running_loop().run_in_executor(self._executor, predictor.warmup)
        except Exception as exc:
            log.exception("could not load %s", slot.task)
            self._fail(slot, f"{type(exc).__name__}: {exc}")
            return
        slot.predictor = predictor
        slot.version = predictor.version
        # Admit only what the queue (batches it will form × measured seconds per batch) can clear in half
        # the request timeout. The other half is the margin: it covers the batch already running and an
        # estimate up to ~2× too low before an admitted request would time out (a fast 429 beats a slow 504).
        slot.batcher = Batcher(predictor, settings.batch_limits(slot.task), executor=self._executor,
                               observer=self.metrics, wait_budget_s=settings.request_timeout_s / 2)
        slot.batcher.start()
        batcher = slot.batcher
        self.metrics.track_queue(slot.task, lambda: batcher.queued_items)
        slot.state = "ready"
        self.metrics.set_model(slot.task, True, predictor.version, slot.options.device, slot.options.dtype)
        log.info("%s %s ready (%s, %s)", slot.task, predictor.version, slot.options.device, slot.options.dtype)

    def _fail(self, slot: ModelSlot, reason: str) -> None:
        slot.state = "failed"
        slot.error = reason
        self.metrics.set_model(slot.task, loaded=False)

    async def drain(self, timeout: float) -> bool:
        """Turn readiness off, refuse new requests, wait ≤ `timeout` s for in-flight ones. True if all done."""
        self.draining = True
        log.info("draining: %d requests in flight", self._active)
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("drain timeout after %.1f s with %d requests in flight", timeout, self._active)
            return False
        return True

    async def close(self) -> None:
        """Stop loading, fail whatever is still queued (503), release the executor."""
        self.draining = True
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        for slot in self.slots.values():
            if slot.batcher is not None:
                await slot.batcher.close(timeout=0)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- request bookkeeping -------------------------------------------------------------------------
    @contextlib.contextmanager
    def track_request(self) -> Iterator[None]:
        """Count a /predict request as in flight for the drain (enter before any await)."""
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._active

    # --- readiness -----------------------------------------------------------------------------------
    @staticmethod
    def _serving(slot: ModelSlot) -> bool:
        return slot.state == "ready" and slot.batcher is not None and slot.batcher.alive

    @property
    def ready(self) -> bool:
        return not self.draining and bool(self.slots) and all(self._serving(s) for s in self.slots.values())

    def not_ready_reason(self) -> str | None:
        """One line naming what is missing and why, or None when ready."""
        if self.draining:
            return "server is draining"
        if self.problem:
            return self.problem
        missing = [f"{slot.task}: {slot.error or ('batcher stopped' if slot.state == 'ready' else slot.state)}"
                   for slot in self.slots.values() if not self._serving(slot)]
        return "; ".join(missing) or None

    def default_mc_samples(self, slot: ModelSlot) -> int:
        """T for a request that gives none: the settings' default, else the model's; never above the cap."""
        default = self.settings.mc_samples_default
        if default is None:
            default = slot.predictor.default_mc_samples if slot.predictor is not None else 0
        return min(default, self.settings.mc_samples_cap)
