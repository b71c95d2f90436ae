"""Typed training configs, presets and a command line generated from the dataclass fields.

Contract:
- `TrainConfig` holds what every task's training loop needs; a task subclasses it and adds its fields.
- A preset is a dict of field overrides applied on top of the dataclass defaults; command-line values
  win over the preset: defaults < preset < `--field-name value`.
- `parse_args(cls, presets, argv)` builds the parser from the fields (one `--field-name` per field; types
  parsed from the annotations: int, float, str, bool, `X | None` (value "none"), `tuple[X, ...]`
  (comma-separated)) plus `--preset`, `--output-dir` (default `artifacts/`) and `--cache-dir`
  (default `.cache/`), and returns (config, RunPaths). Unknown presets or options, unparsable or
  inconsistent values (`validate()`) exit with argparse's usage error (SystemExit, status 2).
- `make_config` is the programmatic path: it raises ValueError instead of exiting.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from training.core.schedules import SCHEDULES

C = TypeVar("C", bound="TrainConfig")
# A model's name is a directory under the artifacts root and a metrics label value: no separators, no dots first.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class TrainConfig:
    """Fields shared by every training job. Steps are optimizer steps (after gradient accumulation)."""

    name: str | None = field(default=None, metadata={
        "help": "the model's name: the artifact goes to <output-dir>/<name>/<version>/ (none: the task's default "
                "model, named after the task)"})
    base_model: str | None = field(default=None, metadata={
        "help": "start from this local Hugging Face checkpoint directory (safetensors; generation: also a .gguf "
                "file) instead of the preset's model; nothing is downloaded"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, shuffling and dropout"})
    epochs: int = field(default=1, metadata={"help": "passes over the training data"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    max_train_seconds: float | None = field(
        default=None, metadata={"help": "time budget for training incl. validation; stops cleanly, keeps best"}
    )
    fit_schedule_to_budget: bool = field(
        default=True, metadata={"help": "shrink the LR schedule's horizon to the steps the time budget allows"}
    )
    batch_size: int = field(default=16, metadata={"help": "examples per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled L2 (not on biases/norms)"})
    l1: float = field(default=0.0, metadata={"help": "L1 penalty coefficient on the decayed weights"})
    grad_clip: float | None = field(default=1.0, metadata={"help": "max global gradient norm; none = off"})
    schedule: str = field(default="onecycle", metadata={"help": f"LR schedule: {', '.join(SCHEDULES)}"})
    warmup_steps: int | None = field(default=None, metadata={"help": "warm-up steps (overrides warmup_ratio)"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "warm-up as a fraction of all steps"})
    final_lr_ratio: float = field(default=0.01, metadata={"help": "LR at the end relative to the peak"})
    gamma: float | None = field(
        default=None, metadata={"help": "exponential: per-step decay factor (none: reach final_lr_ratio)"}
    )
    cycle_steps: int | None = field(default=None, metadata={"help": "cyclic: cycle length (none: 4 cycles)"})
    cycle_gamma: float = field(default=0.5, metadata={"help": "cyclic: peak decay factor per cycle"})
    decay_fraction: float = field(default=0.2, metadata={"help": "wsd: share of the steps after warm-up spent "
                                                                 "decaying to final_lr_ratio (the rest at the peak)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout rate (hidden, attention, head)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of the cross-entropy"})
    bf16: bool = field(default=False, metadata={
        "help": "bf16 autocast for forward passes where the device computes bf16 fast (float32 elsewhere)"})
    eval_every: int = field(default=0, metadata={"help": "validate every N steps (0: at each epoch end)"})
    patience: int = field(default=0, metadata={"help": "early stopping after N evals without gain (0: off)"})
    min_delta: float = field(default=0.0, metadata={"help": "smallest change that counts as a gain"})
    checkpoint_dir: str | None = field(
        default=None, metadata={"help": "where checkpoints go (none: <cache-dir>/checkpoints/<task>)"}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the checkpoint in checkpoint_dir"})
    progress: bool = field(default=True, metadata={"help": "progress bar (only shown on a terminal)"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (none: torch default)"})
    ood: bool = field(default=False, metadata={
        "help": "fit OOD statistics at the end (training/core/ood_job.py; on in the quick and full presets); "
                "skipped for --data file"})

    def validate(self) -> None:
        """Raise ValueError on inconsistent values (called by `parse_args` and the jobs), including a value
        outside a field's `choices` metadata (argparse checks those only on the command line)."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {choices}, got {getattr(self, f.name)!r}")
        if self.name is not None and not MODEL_NAME.fullmatch(self.name):
            raise ValueError(f"name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                             f"(it names a directory and a metrics label), got {self.name!r}")
        positive = ("epochs", "batch_size", "grad_accum")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {sorted(SCHEDULES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if min(self.weight_decay, self.l1) < 0:
            raise ValueError("weight_decay and l1 must be >= 0")
        if self.gamma is not None and not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists) for manifests and checkpoints."""
        return asdict(self)


def validate_files(config: Any) -> None:
    """The file fields every task's config has (`data`, `train_file`, `validation_file`, `test_file`,
    `validation_fraction`, `test_fraction`): ValueError unless `--data file` comes with a train file, files come
    only with `--data file`, and the held-out fractions leave some training data. Files are read by the job."""
    given = [name for name in ("train_file", "validation_file", "test_file") if getattr(config, name)]
    if config.data == "file" and "train_file" not in given:
        raise ValueError("--data file needs --train-file (and optionally --validation-file, --test-file)")
    if config.data != "file" and given:
        raise ValueError(f"--{given[0].replace('_', '-')} is read only with --data file")
    fractions = [getattr(config, name) for name in ("validation_fraction", "test_fraction")]
    if not all(0 < f < 1 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"validation_fraction and test_fraction must be in (0, 1) with a sum < 1, got {fractions}")


@dataclass(frozen=True)
class RunPaths:
    """Where a job writes and caches; not part of the config recorded in the manifest."""

    preset: str
    output_dir: Path
    cache_dir: Path


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


_SCALARS: dict[type, Callable[[str], Any]] = {int: int, float: float, str: str, bool: _parse_bool}


def _parser_for(annotation: Any) -> Callable[[str], Any]:
    """A str → value parser for a field annotation (see module docstring for what is supported)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union annotation {annotation!r}")
        inner = _parser_for(args[0])

        def optional(text: str) -> Any:
            return None if text.strip().lower() in {"none", "null", ""} else inner(text)

        return optional
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, got {annotation!r}")
        item = _parser_for(args[0])
        return lambda text: tuple(item(part) for part in text.split(",") if part.strip())
    if annotation in _SCALARS:
        scalar = _SCALARS[annotation]

        def parse(text: str) -> Any:
            try:
                return scalar(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"expected {annotation.__name__}, got {text!r}") from exc

        return parse
    raise TypeError(f"unsupported config field type {annotation!r}")


def build_parser(cls: type[TrainConfig], presets: Mapping[str, Mapping[str, Any]],
                 prog: str) -> argparse.ArgumentParser:
    """An argparse parser with --preset, --output-dir, --cache-dir and one option per field of `cls`."""
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--preset", choices=sorted(presets), default="quick", help="size preset (default quick)")
    parser.add_argument("--output-dir", type=Path, default=Path("artifacts"), help="artifact root (default artifacts/)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"), help="download cache (default .cache/)")
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group("config fields (override the preset)")
    for f in fields(cls):
        annotation = hints[f.name]
        kwargs: dict[str, Any] = {"dest": f.name, "type": _parser_for(annotation), "default": argparse.SUPPRESS}
        if annotation is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")  # `--bf16` alone means true
        choices = f.metadata.get("choices")
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help strings
        if choices:
            kwargs["choices"] = choices
        group.add_argument("--" + f.name.replace("_", "-"), help=help_text, **kwargs)
    return parser


def make_config(cls: type[C], preset: Mapping[str, Any], overrides: Mapping[str, Any]) -> C:
    """Defaults < preset < overrides; unknown keys raise ValueError; the result is validated."""
    known = {f.name for f in fields(cls)}
    unknown = (set(preset) | set(overrides)) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    config = cls(**{**preset, **overrides})
    config.validate()
    return config


def parse_args(
    cls: type[C], presets: Mapping[str, Mapping[str, Any]], argv: Sequence[str] | None, prog: str
) -> tuple[C, RunPaths]:
    """Parse `argv` (None: sys.argv[1:]) into a validated config of type `cls` and its RunPaths."""
    parser = build_parser(cls, presets, prog)
    namespace = vars(parser.parse_args(argv))
    preset = namespace.pop("preset")
    paths = RunPaths(preset=preset, output_dir=namespace.pop("output_dir"), cache_dir=namespace.pop("cache_dir"))
    try:
        config = make_config(cls, presets[preset], namespace)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2 and the usage line
    return config, paths


def recorded_config(cls: type[C], record: Mapping[str, Any] | None) -> C:
    """The job config an artifact was trained with, from its manifest's `training_config` record: fields the class
    does not know (a newer or older code's) are dropped, JSON lists become the tuples the fields hold."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in (record or {}).items() if k in known})


def config_fingerprint(config: TrainConfig, ignore: frozenset[str]) -> dict[str, Any]:
    """The config's fields minus `ignore`, for detecting a resume under a different config."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in ignore}
