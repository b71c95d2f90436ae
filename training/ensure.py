"""Train every requested task that has no complete artifact yet (the main job's preparation step).

    python -m training.ensure --tasks sentiment[,translation,...] --preset quick --output-dir artifacts/

A task counts as present when `<output-dir>/<task>/` holds a directory with a manifest (a half-written
one does not count, so an interrupted run is simply retried). Each missing task runs its own job
module's `main(argv)` in this process, so its progress bar shows in the terminal. Exit status is 0
when every requested task ends up with an artifact, 1 otherwise (the failures are listed).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence

from models.core.artifacts import list_artifacts

# Task → training job module (a dict registry; each module exposes `main(argv) -> int | None`).
JOBS: dict[str, str] = {
    "sentiment": "training.sentiment.job",
    "translation": "training.translation.job",
    "generation": "training.generation.job",
}


def parse_tasks(raw: str) -> list[str]:
    """Comma- or space-separated task names; 'all' means every task with a job. Raises ValueError."""
    names = [name for part in raw.replace(",", " ").split() if (name := part.strip())]
    if names == ["all"]:
        return list(JOBS)
    unknown = [name for name in names if name not in JOBS]
    if unknown or not names:
        raise ValueError(f"unknown tasks {unknown or raw!r}; known: {', '.join(JOBS)}")
    return names


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

    failed: list[str] = []
    for task in tasks:
        existing = list_artifacts(args.output_dir, task)
        if existing:
            print(f"[ensure] {task}: using {existing[-1]}", flush=True)
            continue
        print(f"[ensure] {task}: no artifact under {args.output_dir}/{task}; training preset {args.preset!r}",
              flush=True)
        started = time.monotonic()
        job = importlib.import_module(JOBS[task])
        status = job.main(["--preset", args.preset, "--output-dir", args.output_dir, "--cache-dir", args.cache_dir])
        if status or not list_artifacts(args.output_dir, task):
            failed.append(task)
            print(f"[ensure] {task}: training failed (status {status})", file=sys.stderr, flush=True)
        else:
            print(f"[ensure] {task}: trained in {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"[ensure] no artifact for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
