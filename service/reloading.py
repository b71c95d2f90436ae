"""New versions without downtime: the artifact poller and `POST /models/{name}/reload` (docs/architecture.md §6).

Contract:
- `reload(runtime, slot)`: when the model's newest complete version (or its pinned one) is not the one serving,
  load and warm it beside the serving one, then switch new requests to it (`Runtime.switch`); the old version
  finishes its queue and is released. A version that fails to load leaves the old one serving and is reported:
  logged, `slot.reload_error` (GET /models/{name}), `nlp_model_reloads_total{result="failed"}`. A model that
  serves nothing yet (training, failed, its artifact just written) gets its first load. One reload per model
  at a time (the slot's lock); requests are never held up by one.
- `poll_once(runtime)` reloads every served model whose newest version changed, skipping a version that
  already failed (it is retried by `reload`, or when a newer one appears) and pinned models, and, when no
  models are listed in the settings, adds models whose first artifact appeared. `poll_forever` runs it every
  `poll_interval_s` seconds; a failed poll is logged and the next one runs as usual.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from models.core.artifacts import ArtifactError
from service import discovery
from service.slots import ModelSlot

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger(__name__)

ReloadOutcome = Literal["swapped", "loaded", "unchanged", "failed"]


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did: `swapped` (a new version serves), `loaded` (the model's first version serves),
    `unchanged` (nothing newer, or a known-bad version skipped) or `failed` (the serving version, if any, stays)."""

    name: str
    result: ReloadOutcome
    version: str | None
    previous_version: str | None = None
    error: str | None = None


async def reload(runtime: Runtime, slot: ModelSlot, *, retry_failed: bool = True) -> ReloadResult:
    """Bring `slot` to its newest (or pinned) complete version (module docstring)."""
    async with slot.lock:
        newest = discovery.newest_version(runtime.settings, slot.name)
        skip = newest is not None and newest == slot.failed_version and not retry_failed
        if slot.current is None:
            return await _first_load(runtime, slot, newest, skip)
        previous = slot.current.version
        # Compared by directory: the artifact a version id names is what is on disk.
        if newest is None or newest == slot.current.artifact.name or skip:
            return ReloadResult(slot.name, "unchanged", previous)
        try:
            loaded = await runtime.load_version(slot, discovery.artifact_of(runtime.settings, slot.name))
        except Exception as exc:
            slot.reload_error = f"version {newest}: {type(exc).__name__}: {exc}"
            slot.failed_version = newest
            runtime.metrics.observe_reload(slot.labels, swapped=False)
            log.error("%s: new version %s failed to load; %s keeps serving: %s", slot.name, newest, previous, exc)
            return ReloadResult(slot.name, "failed", previous, previous, slot.reload_error)
        runtime.switch(slot, loaded)
        runtime.metrics.observe_reload(slot.labels, swapped=True)
        log.info("%s: swapped %s → %s", slot.name, previous, loaded.version)
        return ReloadResult(slot.name, "swapped", loaded.version, previous)


async def _first_load(runtime: Runtime, slot: ModelSlot, newest: str | None, skip: bool) -> ReloadResult:
    if skip:
        return ReloadResult(slot.name, "unchanged", None)
    if newest is not None:
        _refresh_task(runtime, slot)
    await runtime.load_first(slot)  # without an artifact: only refreshes the training / failed state
    if slot.current is not None:
        return ReloadResult(slot.name, "loaded", slot.current.version)
    return ReloadResult(slot.name, "failed" if newest is not None else "unchanged", None, error=slot.error)


def _refresh_task(runtime: Runtime, slot: ModelSlot) -> None:
    """A model configured before it had an artifact takes its task from the manifest once there is one."""
    try:
        task = discovery.task_of(discovery.artifact_of(runtime.settings, slot.name))
    except ArtifactError:
        return
    if task != slot.task:
        slot.task = task
        runtime.metrics.track_queue(slot.labels, lambda: slot.batcher.queued_items if slot.batcher else 0)


async def poll_once(runtime: Runtime) -> list[ReloadResult]:
    """One look at the artifacts directory (module docstring); returns what changed."""
    if runtime.draining:
        return []
    settings = runtime.settings
    if not (settings.models or settings.tasks):
        for name in discovery.model_names(settings, runtime.known_tasks):
            if name not in runtime.slots:
                log.info("new model %s under %s", name, settings.artifacts_dir)
                runtime.metrics.set_model(runtime.add_slot(name).labels, loaded=False)
                runtime.problem = None
    results = []
    for slot in list(runtime.slots.values()):
        pinned = slot.name in settings.versions and slot.current is not None
        if pinned or slot.lock.locked():
            continue
        result = await reload(runtime, slot, retry_failed=False)
        if result.result != "unchanged":
            results.append(result)
    return results


async def poll_forever(runtime: Runtime, interval_s: float) -> None:
    """`poll_once` every `interval_s` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await poll_once(runtime)
        except Exception:  # a poll must never end the poller: the next one may well succeed
            log.exception("looking for new model versions failed")
