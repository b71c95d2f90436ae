"""Training history and resumable checkpoints (no pickle: safetensors + `torch.load(weights_only=True)`).

Layout of a checkpoint directory:
    last/model.safetensors   weights at the last checkpoint
    last/state.pt            optimizer, scheduler, progress, history, RNG (plain tensors/containers only)
    last/config.json         the config it was written under (for humans and the resume check)
    best/model.safetensors   the best weights by the validation metric
Each of `last/` and `best/` is written to a temporary sibling and swapped in by rename, so a crash while
writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from training.core.config import TrainConfig, config_fingerprint

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
# Fields that may change between a run and its resumption (they do not change what is being trained).
RESUME_MAY_CHANGE = frozenset(
    {"resume", "max_train_seconds", "fit_schedule_to_budget", "progress", "num_threads", "checkpoint_dir", "ood"}
)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (the model itself otherwise)."""
    return getattr(model, "module", model)


@dataclass
class TrainHistory:
    """What happened during training, per optimizer step and per evaluation (JSON-ready via to_dict)."""

    planned_steps: int = 0
    steps_done: int = 0
    samples_seen: int = 0
    epochs_done: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    samples_per_second: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    stopped: str = ""
    resumed_at: list[int] = field(default_factory=list)

    def record_step(self, loss: float, lr: float, samples_per_second: float, samples: int) -> None:
        self.steps_done += 1
        self.samples_seen += samples
        self.losses.append(loss)
        self.lrs.append(lr)
        self.samples_per_second.append(samples_per_second)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainHistory:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def summary(self) -> dict[str, Any]:
        """Scalars for reports: steps, samples, seconds, throughput, best and why it stopped."""
        return {
            "steps": self.steps_done,
            "planned_steps": self.planned_steps,
            "samples_seen": self.samples_seen,
            "epochs_done": self.epochs_done,
            "train_seconds": round(self.train_seconds, 2),
            "eval_seconds": round(self.eval_seconds, 2),
            "samples_per_second": round(self.samples_seen / self.train_seconds, 2) if self.train_seconds else None,
            "best_step": self.best_step,
            "best_score": self.best_score,
            "stopped": self.stopped,
            "resumed_at": self.resumed_at,
            "final_loss": self.losses[-1] if self.losses else None,
        }


def _swap_in(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


class Checkpointer:
    """Writes and reads the checkpoint directory of one run (see module docstring).

    Only the main process writes (DDP-ready); every process can read.
    """

    def __init__(self, directory: str | Path, config: TrainConfig, is_main_process: bool = True) -> None:
        self.dir = Path(directory)
        self.config = config
        self.is_main = is_main_process
        self.ignore = RESUME_MAY_CHANGE | getattr(config, "resume_may_change", frozenset())

    @property
    def has_last(self) -> bool:
        return (self.dir / "last" / STATE_FILE).is_file()

    def _write(self, name: str, model: nn.Module, state: dict[str, Any] | None) -> None:
        if not self.is_main:
            return
        tmp = self.dir / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(model, str(tmp / MODEL_FILE))  # handles tied weights, unlike save_file
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
            (tmp / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True), "utf-8")
        _swap_in(tmp, self.dir / name)

    def save_last(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Weights + training state for `resume`."""
        self._write("last", model, state)

    def save_best(self, model: nn.Module) -> None:
        self._write("best", model, None)

    def load_best(self, model: nn.Module) -> None:
        path = self.dir / "best" / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no best checkpoint at {path}")
        load_model(model, str(path))

    def load_last(self, model: nn.Module) -> dict[str, Any]:
        """Load the last weights into `model` and return the training state.

        Raises ValueError when there is no checkpoint or it was written under a different config.
        """
        last = self.dir / "last"
        if not self.has_last:
            raise ValueError(f"resume requested but there is no checkpoint in {last}")
        saved = json.loads((last / CONFIG_FILE).read_text("utf-8"))
        now = json.loads(json.dumps(config_fingerprint(self.config, self.ignore)))  # tuples → lists, as saved
        # A field added after the checkpoint was written counts as unchanged at its default: the old run had it so.
        defaults = json.loads(json.dumps({f.name: f.default for f in fields(self.config) if f.default is not MISSING}))
        differing = sorted(k for k in set(saved) | set(now) if k not in self.ignore
                           and saved.get(k, defaults.get(k)) != now.get(k))
        if differing:
            raise ValueError(f"checkpoint in {last} was written under a different config: {differing}")
        load_model(model, str(last / MODEL_FILE))
        return torch.load(last / STATE_FILE, map_location="cpu", weights_only=True)
