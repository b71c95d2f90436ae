"""Train every requested task that has no complete artifact yet (the main job's preparation step).

    python -m training.ensure --tasks sentiment[,translation,...] --preset quick --output-dir artifacts/

A task counts as present when `<output-dir>/<task>/` holds a directory with a manifest (a half-written
one does not count, so an interrupted run is simply retried). Each missing task runs its own job
module's `main(argv)` in this process, one after the other, so its progress shows in the log. Exit status
is 0 when every requested task ends up with an artifact, 1 otherwise (the failures are listed).

While it works, each missing task has a status file `<output-dir>/<task>/.training.json` (hidden, so artifact
listings skip it) that a running server reads (service/discovery.py) to show the model as `training`:
{"state": "queued" | "training" | "failed", "task", "preset", "started_at", "error", "pid", "host"}. It is
removed once the task's artifact is written and says `failed` (with the reason) when its training failed or
was interrupted (SIGTERM, Ctrl-C). This is what lets `make run` serve at once while training runs beside it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.core.artifacts import list_artifacts

# Task → training job module (a dict registry; each module exposes `main(argv) -> int | None`).
JOBS: dict[str, str] = {
    "sentiment": "training.sentiment.job",
    "translation": "training.translation.job",
    "generation": "training.generation.job",
}
# The status file a server reads (service/discovery.TRAINING_STATUS; training never imports service).
STATUS_FILE = ".training.json"


def parse_tasks(raw: str) -> list[str]:
    """Comma- or space-separated task names; 'all' means every task with a job. Raises ValueError."""
    names = [name for part in raw.replace(",", " ").split() if (name := part.strip())]
    if names == ["all"]:
        return list(JOBS)
    unknown = [name for name in names if name not in JOBS]
    if unknown or not names:
        raise ValueError(f"unknown tasks {unknown or raw!r}; known: {', '.join(JOBS)}")
    return names


def write_status(root: Path, task: str, state: str, preset: str, **extra: Any) -> None:
    """Write `<root>/<task>/.training.json` atomically (module docstring)."""
    directory = Path(root) / task
    directory.mkdir(parents=True, exist_ok=True)
    status = {"state": state, "task": task, "preset": preset, "pid": os.getpid(), "host": socket.gethostname(),
              **extra}
    temporary = directory / f"{STATUS_FILE}.tmp"
    temporary.write_text(json.dumps(status), encoding="utf-8")
    temporary.replace(directory / STATUS_FILE)


def clear_status(root: Path, task: str) -> None:
    (Path(root) / task / STATUS_FILE).unlink(missing_ok=True)


def _train(task: str, args: argparse.Namespace) -> bool:
    """Train `task` once; True when its artifact exists afterwards. Keeps its status file current."""
    root = Path(args.output_dir)
    print(f"[ensure] {task}: no artifact under {root / task}; training preset {args.preset!r}", flush=True)
    started = time.monotonic()
    write_status(root, task, "training", args.preset, started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    try:
        job = importlib.import_module(JOBS[task])
        status = job.main(["--preset", args.preset, "--output-dir", args.output_dir, "--cache-dir", args.cache_dir])
    except Exception as exc:  # one task's failure must not stop the others; the reason goes to the server
        status, error = 1, f"{type(exc).__name__}: {exc}"
    else:
        error = f"training exited with status {status} without an artifact; see the training log"
    if not status and list_artifacts(root, task):
        clear_status(root, task)
        print(f"[ensure] {task}: trained in {time.monotonic() - started:.0f} s", flush=True)
        return True
    write_status(root, task, "failed", args.preset, error=error)
    print(f"[ensure] {task}: training failed ({error})", file=sys.stderr, flush=True)
    return False


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `main`'s handler, which records the interruption


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ensure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sentiment", help="tasks to prepare, comma-separated, or 'all'")
    parser.add_argument("--preset", default="quick", help="preset for tasks that must be trained")
    parser.add_argument("--output-dir", default="artifacts", help="artifact root")
    parser.add_argument("--cache-dir", default=".cache", help="download/extract cache")
    args = parser.parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as exc:
        parser.error(str(exc))

    root = Path(args.output_dir)
    missing = []
    for task in tasks:
        existing = list_artifacts(root, task)
        if existing:
            print(f"[ensure] {task}: using {existing[-1]}", flush=True)
        else:
            missing.append(task)
            write_status(root, task, "queued", args.preset)
    # SIGTERM (make's trap, docker stop) then unwinds like Ctrl-C. Only the main thread may set a handler.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupted) if missing and main_thread else None
    failed: list[str] = []
    pending = list(missing)
    try:
        while pending:
            if not _train(pending[0], args):
                failed.append(pending[0])
            pending.pop(0)
    except BaseException as exc:  # a server must not show these models as training forever
        for task in pending:
            write_status(root, task, "failed", args.preset,
                         error=f"training interrupted ({type(exc).__name__}); run it again to train this model")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if failed:
        print(f"[ensure] no artifact for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
