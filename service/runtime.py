"""The registry of served models: discovery, loading, warm-up, hot swaps, readiness, drain.

Contract:
- `start()` (called from the app's startup) spawns loading in the background, so the server answers
  `/health/*` while models load. Each model (by name, `service/discovery.py`) goes pending → loading → ready
  | failed, or shows `training` while `python -m training.ensure` trains it; each serves as soon as it is ready,
  a failure is recorded with its reason and the others keep loading and serving.
- A model's task comes from its manifest (a name with no artifact yet: the task it is named after, or the one
  its training status names). It loads its pinned (`settings.versions`) or newest complete version.
- Loading and warm-up (a real forward pass) run on worker threads; a model is ready only after warm-up.
- Hot swap (`service/reloading.py`): a newer version is loaded and warmed beside the serving one, then
  `switch` points new requests at it in one step of the event loop; the old version keeps its queue and
  is released (batcher closed, references dropped, device cache emptied) once the last request that
  leased it (`LoadedModel.acquire`, at admission) is done, or after the request timeout at the latest.
- `ready` is True when at least one model is configured, every configured model is ready, and the runtime
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
from pathlib import Path
from typing import Any

from models.core.artifacts import ArtifactError, read_manifest
from models.core.predictor import Predictor, PredictorOptions
from service import devices, discovery
from service.batcher import Batcher
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.slots import LoadedModel, ModelSlot

log = logging.getLogger(__name__)

Loader = Callable[[Path, PredictorOptions], Predictor]
# Manifest sections worth showing on GET /models/{name} (the file list and training config are long).
_MANIFEST_FIELDS = ("name", "task", "version", "created_at", "model_class", "labels", "default_mc_samples",
                    "dropout", "calibration", "metrics", "libraries")


def _default_loader() -> tuple[Loader, tuple[str, ...]]:
    # Imported lazily so the service (and its tests with fake predictors) import without torch models.
    from models.registry import TASKS, load_predictor

    return load_predictor, tuple(TASKS)


class Runtime:
    """Served models by name: their versions, batchers and states (see module docstring)."""

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
        self.workers = devices.resolve_workers(settings.inference_workers, settings.device, settings.torch_threads)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="nlp-infer")
        self.total_threads: int | None = None  # torch's intra-op threads, once set at start-up
        self._loading: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()  # the poller and retiring versions
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- discovery -----------------------------------------------------------------------------------
    def add_slot(self, name: str) -> ModelSlot:
        """A slot for model `name` (pending), its task from its artifact, training status or name."""
        task = name if name in self.known_tasks else "unknown"
        try:
            task = discovery.task_of(discovery.artifact_of(self.settings, name))
        except ArtifactError:
            status = discovery.training_status(self.settings.artifacts_dir, name) or {}
            task = discovery.canonical_task(str(status.get("task") or task))
        slot = self.slots[name] = ModelSlot(name, task)
        self.metrics.track_queue(slot.labels, lambda: slot.batcher.queued_items if slot.batcher is not None else 0)
        return slot

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Record the configured models and start loading them in the background (returns at once)."""
        for name in discovery.model_names(self.settings, self.known_tasks):
            self.add_slot(name)
        if not self.slots:
            self.problem = f"no model artifacts found under {self.settings.artifacts_dir}"
            log.error("%s; readiness stays 503%s", self.problem,
                      "; watching for new ones" if self.settings.poll_interval_s else "")
        self._loading = asyncio.get_running_loop().create_task(self._load_all(), name="load-models")

    async def wait_loaded(self) -> None:
        """Wait until every configured model is ready or failed (for tests and the CLI)."""
        if self._loading is not None:
            await asyncio.shield(self._loading)

    async def _load_all(self) -> None:
        try:
            devices.set_torch_threads(self.settings.torch_threads)
            self.total_threads = devices.torch_threads()
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
            self.metrics.set_model(slot.labels, loaded=False)
        for slot in list(self.slots.values()):
            async with slot.lock:
                await self.load_first(slot)
        if self.settings.poll_interval_s > 0:
            from service.reloading import poll_forever  # the poller builds on this module

            self.spawn(poll_forever(self, self.settings.poll_interval_s), name="poll-artifacts")

    def spawn(self, work: Any, name: str) -> None:
        """Run `work` in the background, kept referenced until it ends (cancelled by `close`)."""
        job = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def load_first(self, slot: ModelSlot) -> None:
        """Load `slot`'s first version (pending | failed | training → loading → ready | failed | training)."""
        if slot.task not in self.known_tasks:
            self._fail(slot, f"unknown task {slot.task!r} of model {slot.name!r}; known tasks: "
                       f"{', '.join(self.known_tasks)}")
            return
        try:
            artifact = discovery.artifact_of(self.settings, slot.name)
        except ArtifactError as exc:
            status = discovery.training_status(self.settings.artifacts_dir, slot.name)
            if status is not None and status.get("state") in ("queued", "training"):
                slot.state = "training"
                doing = f"started {status.get('started_at')}" if status.get("state") == "training" else "queued"
                slot.error = (f"being trained (preset {status.get('preset')}, {doing}); served once its artifact is "
                              "written")
                return
            reason = str(exc)
            if status is not None:
                reason += f" (its training failed: {status.get('error') or 'see the training log'})"
            self._fail(slot, reason)
            return
        slot.state, slot.version = "loading", artifact.name
        try:
            loaded = await self.load_version(slot, artifact)
        except Exception as exc:
            log.exception("could not load %s", slot.name)
            slot.failed_version = artifact.name
            self._fail(slot, f"{type(exc).__name__}: {exc}")
            return
        self.switch(slot, loaded)

    async def load_version(self, slot: ModelSlot, artifact: Path) -> LoadedModel:
        """Load and warm `artifact` for `slot` and start its batcher (not yet serving). Raises on failure."""
        settings, name, task = self.settings, slot.name, slot.task
        manifest = read_manifest(artifact)
        if discovery.canonical_task(manifest.task) != task:
            raise ArtifactError(f"{artifact}: a {manifest.task} model, but {name!r} serves {task}")
        options = PredictorOptions(
            device=self.device or "cpu",
            dtype=self.dtype or "float32",
            mc_last_k=settings.last_k(name, task),
            mc_dropout_sites=settings.dropout_sites(name, task),
            max_input_tokens=settings.max_input_tokens,
            backend=settings.backend_for(name, task),
            onnx_model=settings.onnx_model(name, task),
        )
        log.info("loading %s from %s", name, artifact)
        predictor = await asyncio.to_thread(self._loader, artifact, options)
        await asyncio.get_running_loop().run_in_executor(self._executor, predictor.warmup)
        # Admit only what the queue (batches it will form × measured seconds per batch) can clear in half
        # the request timeout. The other half is the margin: it covers the batch already running and an
        # estimate up to ~2× too low before an admitted request would time out (a fast 429 beats a slow 504).
        workers = self.workers if getattr(predictor, "concurrent_batches", False) else 1
        if workers < self.workers:
            log.info("%s runs one batch at a time: its predictor does not allow concurrent batches", name)
        batcher = Batcher(predictor, settings.batch_limits(name, task), executor=self._executor,
                          observer=self.metrics, wait_budget_s=settings.request_timeout_s / 2, labels=slot.labels,
                          workers=workers,
                          threads=max(1, self.total_threads // workers) if self.total_threads else None)
        batcher.start()
        summary = {key: getattr(manifest, key) for key in _MANIFEST_FIELDS}
        return LoadedModel(predictor, batcher, artifact, options, {**summary, "name": manifest.model_name})

    def switch(self, slot: ModelSlot, loaded: LoadedModel) -> None:
        """Serve `loaded` for new requests from now on; retire the version it replaces in the background."""
        old, slot.current = slot.current, loaded
        slot.state, slot.error, slot.version = "ready", None, loaded.version
        slot.reload_error = slot.failed_version = None
        options = loaded.options
        self.metrics.set_model(slot.labels, True, loaded.version, options.device, options.dtype)
        log.info("%s %s ready (%s, %s)", slot.name, loaded.version, options.device, options.dtype)
        if old is not None:
            slot.swaps += 1
            self.metrics.clear_model_info(slot.labels, old.version, old.options.device, old.options.dtype)
            self.spawn(self._retire(slot, old), name=f"retire-{slot.name}-{old.version}")

    async def _retire(self, slot: ModelSlot, old: LoadedModel) -> None:
        # Requests admitted before the switch hold a lease on `old` and finish on it; a lease can live at most
        # the request timeout, so past that (plus a grace) the version is closed whatever a leak says.
        try:
            async with asyncio.timeout(self.settings.request_timeout_s + 5):
                await old.idle.wait()
        except TimeoutError:
            log.warning("%s %s: %d requests still hold it after the request timeout; closing it", slot.name,
                        old.version, old.users)
        finally:  # also when the server shuts down meanwhile: no batcher worker outlives the runtime
            await old.batcher.close(timeout=0)
        log.info("%s %s released", slot.name, old.version)
        del old
        await asyncio.to_thread(devices.release_memory, self.device or "cpu")

    def _fail(self, slot: ModelSlot, reason: str) -> None:
        slot.state = "failed"
        slot.error = reason
        self.metrics.set_model(slot.labels, loaded=False)

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
        """Stop loading and polling, fail whatever is still queued (503), release the executor."""
        self.draining = True
        for job in [self._loading, *self._background]:
            if job is not None and not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
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
        missing = [f"{slot.name}: {slot.error or ('batcher stopped' if slot.state == 'ready' else slot.state)}"
                   for slot in self.slots.values() if not self._serving(slot)]
        return "; ".join(missing) or None

    def default_mc_samples(self, slot: ModelSlot) -> int:
        """T for a request that gives none: the settings' default, else the model's; never above the cap."""
        default = self.settings.mc_samples_default
        if default is None:
            default = slot.predictor.default_mc_samples if slot.predictor is not None else 0
        return min(default, self.settings.mc_samples_cap)
