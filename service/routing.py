"""Which served model a request goes to: `"model": NAME`, or `"task": TASK` for that task's default model.

Contract (`select(runtime, model, task)`; the errors are docs/architecture.md §5's):
- `model` given: the model of that name (422 `unknown_model` listing the served names when there is none); with
  `task` too, the model must be of that task (422 `model_task_mismatch`).
- only `task` (aliases folded: `classification` = `sentiment`): its default model, the one named after the task,
  else the only served model of that task; 422 `ambiguous_task` when several models have the task and none is
  named after it, 422 `unknown_task` for a task no predictor knows, 503 `model_not_loaded` for a known task
  with no model configured.
- `by_name(runtime, name)`: the model a path names (`/models/{name}`): that name, else the default model of
  the task `name`, else None.
- `labels(runtime, model, task)`: the metric labels of a request, never raising and never taken from the
  request unchecked: a name or task that is not served is recorded as `unknown`.
"""

from __future__ import annotations

from service.discovery import canonical_task
from service.errors import LimitError, UnavailableError, UnknownTaskError
from service.metrics import Labels
from service.runtime import Runtime
from service.slots import ModelSlot

UNKNOWN: Labels = ("unknown", "unknown")


def _names(runtime: Runtime) -> str:
    return ", ".join(runtime.slots) or "none"


def _default_of(runtime: Runtime, task: str) -> ModelSlot | None:
    """The task's default model: named after the task, else the only one of the task (None: none or several)."""
    slot = runtime.slots.get(task)
    if slot is not None and slot.task == task:
        return slot
    of_task = [s for s in runtime.slots.values() if s.task == task]
    return of_task[0] if len(of_task) == 1 else None


def select(runtime: Runtime, model: str | None, task: str | None) -> ModelSlot:
    """The slot a request names (module docstring); raises the mapped ServiceError."""
    wanted = canonical_task(task) if task is not None else None
    if model is not None:
        slot = runtime.slots.get(model)
        if slot is None:
            raise LimitError(f"no model named {model!r}; served models: {_names(runtime)} (see GET /models)",
                             error_type="unknown_model")
        if wanted is not None and slot.task != wanted:
            raise LimitError(f"model {model!r} is a {slot.task} model, not {task}; drop `task` or pick a {task} "
                             "model (see GET /models)", error_type="model_task_mismatch")
        return slot
    if wanted is None:
        raise LimitError("name a model (`model`) or a task (`task`)", error_type="validation_error")
    if wanted not in runtime.known_tasks:
        raise UnknownTaskError(f"unknown task {task!r}; known tasks: {', '.join(runtime.known_tasks)}")
    slot = _default_of(runtime, wanted)
    if slot is not None:
        return slot
    several = [s.name for s in runtime.slots.values() if s.task == wanted]
    if several:
        raise LimitError(f"task {task!r} has several models ({', '.join(several)}) and none named {wanted!r}; "
                         "choose one with `model`", error_type="ambiguous_task")
    raise UnavailableError(f"{wanted} model is not loaded (not configured)", error_type="model_not_loaded")


def by_name(runtime: Runtime, name: str) -> ModelSlot | None:
    """The model `name` names on a path (module docstring), or None."""
    slot = runtime.slots.get(name)
    if slot is None and canonical_task(name) in runtime.known_tasks:
        slot = _default_of(runtime, canonical_task(name))
    return slot


def labels(runtime: Runtime, model: str | None, task: str | None) -> Labels:
    """(task, model) metric labels of a request (module docstring)."""
    if model is not None:
        slot = runtime.slots.get(model)
        return slot.labels if slot is not None else UNKNOWN
    wanted = canonical_task(task) if task is not None else None
    if wanted is None or wanted not in runtime.known_tasks:
        return UNKNOWN
    slot = _default_of(runtime, wanted)
    return slot.labels if slot is not None else (wanted, wanted)
