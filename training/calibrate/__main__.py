"""`python -m training.calibrate --task classification|translation|generation --base-model PATH --validation-file FILE
--name NAME [--test-file FILE] [--train-file FILE] [--output-dir artifacts] [--cache-dir .cache] [--FIELD VALUE ...]`

Wraps an already fine-tuned checkpoint into an artifact without training a step: checks its dropout (a checkpoint
without any is refused: MC dropout over it would report zero uncertainty), then runs the task job's own end
(training/<task>/job.finish) on the user's validation file: every choice on its own disjoint part of it (last-k
among the MC modes, τ and the confidence map or the sequence abstain rule), the report on a held-out part (or
`--test-file`), the manifest and reports through models.core.artifacts.write_artifact. `--train-file` names the
data the model was fine-tuned on, recorded as the training split; the quick preset's OOD step (the jobs' own,
training/core/ood_job.py) describes it, and is skipped without it. Generation also re-calibrates on a built-in
corpus (`--data austen` with one of our artifacts' `model/` as --base-model: the job's own held-out spans, OOD
fitted too; no --validation-file).
Every other `--field value` is the task job's config field (`--help`).
Prints the artifact's path; exit status 0, 1 for a bad file or checkpoint (the message says what to fix), 2 for
bad arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.calibrate import classification, generation, translation
from training.core.cli import job_main

# task → (config class, presets, run(config, preset, output_dir, cache_dir) -> artifact path, extra preset)
TASKS: dict[str, tuple[type, dict[str, dict[str, Any]], Callable[..., Path]]] = {
    "classification": (classification.CalibrateConfig, classification.PRESETS, classification.run),
    "translation": (translation.CalibrateConfig, translation.PRESETS, translation.run),
    "generation": (generation.CalibrateConfig, generation.PRESETS, generation.run),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--task" not in args or args.index("--task") + 1 >= len(args) or args[args.index("--task") + 1] not in TASKS:
        print(f"usage: python -m training.calibrate --task {{{','.join(TASKS)}}} --base-model PATH "
              "--validation-file FILE --name NAME [...]", file=sys.stderr)
        return 2
    at = args.index("--task")
    task = args[at + 1]
    config_cls, presets, run = TASKS[task]
    rest = args[:at] + args[at + 2:]
    return job_main(config_cls, presets, run, f"python -m training.calibrate --task {task}", rest)


if __name__ == "__main__":
    raise SystemExit(main())
