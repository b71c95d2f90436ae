"""A served model's slot and its loaded versions (docs/architecture.md §6 "Runtime"), kept by `service.runtime`.

A `ModelSlot` is one configured model, by name: its state, the version serving (`current`) and what became of
the newest version it tried. A `LoadedModel` is one loaded, warmed version with its own batcher; requests
lease it at admission (`acquire`, synchronously, in the same event-loop step that read `slot.current`) and
give it back when they are done (`release`), so a hot swap can retire a version once nobody holds it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.core.predictor import Predictor, PredictorOptions
from service.batcher import Batcher
from service.metrics import Labels

SlotState = Literal["pending", "loading", "training", "ready", "failed"]


@dataclass(eq=False)
class LoadedModel:
    """One loaded, warmed version of a model and its batcher. `users` counts the requests holding it."""

    predictor: Predictor
    batcher: Batcher
    artifact: Path
    options: PredictorOptions
    manifest: dict[str, Any]
    users: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def version(self) -> str:
        return self.predictor.version

    def acquire(self) -> LoadedModel:
        """Lease this version for one request (synchronously, in the step that chose it)."""
        self.users += 1
        self.idle.clear()
        return self

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.idle.set()


@dataclass(eq=False)
class ModelSlot:
    """One configured model (by name) and what became of it; `current` is the version serving."""

    name: str
    task: str
    state: SlotState = "pending"
    error: str | None = None
    version: str | None = None  # the version serving, or being loaded when none serves yet
    current: LoadedModel | None = None
    reload_error: str | None = None  # why the newest version did not load (the current one keeps serving)
    failed_version: str | None = None  # that version; the poller does not retry it (POST .../reload does)
    swaps: int = 0  # versions swapped in while serving
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def labels(self) -> Labels:
        return (self.task, self.name)

    @property
    def predictor(self) -> Predictor | None:
        return self.current.predictor if self.current is not None else None

    @property
    def batcher(self) -> Batcher | None:
        return self.current.batcher if self.current is not None else None

    @property
    def options(self) -> PredictorOptions | None:
        return self.current.options if self.current is not None else None

    @property
    def manifest(self) -> dict[str, Any]:
        return self.current.manifest if self.current is not None else {}

    @property
    def artifact(self) -> Path | None:
        return self.current.artifact if self.current is not None else None
