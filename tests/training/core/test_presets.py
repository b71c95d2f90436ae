"""Every preset of every job is defined by its work, not by the clock: no preset sets a time budget, each quick
preset names its steps, and the training plan (steps, LR schedule and its horizon) comes out the same whether
the machine is fast or slow (a patched clock, nothing sleeps)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from training.core.config import TrainConfig, make_config
from training.core.loop import Trainer
from training.generation.job import PRESETS as GENERATION_PRESETS
from training.generation.job import GenerationConfig
from training.sentiment.config import PRESETS as SENTIMENT_PRESETS
from training.sentiment.config import SentimentConfig
from training.translation.job import PRESETS as TRANSLATION_PRESETS
from training.translation.job import TranslationConfig

JOBS: dict[str, tuple[type[TrainConfig], dict[str, dict[str, Any]]]] = {
    "sentiment": (SentimentConfig, SENTIMENT_PRESETS),
    "translation": (TranslationConfig, TRANSLATION_PRESETS),
    "generation": (GenerationConfig, GENERATION_PRESETS),
}
QUICK_STEPS = {"sentiment": 375, "translation": 1700, "generation": 465}  # 6,000 reviews / 16; README runs


class Clock:
    """A clock that advances `seconds_per_call` each time it is read: a fast or a slow machine."""

    def __init__(self, seconds_per_call: float) -> None:
        self.now, self.step = 0.0, seconds_per_call

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Batches:
    """`n` tiny regression batches per epoch, sized like the job's epoch."""

    def __init__(self, n: int) -> None:
        self.n = n
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(8, 4, generator=generator)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(self.n):
            yield {"x": self.x, "y": self.x.sum(dim=1)}


def _plan(config: TrainConfig, clock: Clock) -> tuple[Any, ...]:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    calls = iter(range(10**6))

    def evaluate() -> dict[str, float]:
        return {"score": float(next(calls))}  # always improving: early stopping never ends the run

    trainer = Trainer(model, lambda m, b: nn.functional.mse_loss(m(b["x"]).squeeze(-1), b["y"]),
                      Batches(config.max_steps or 1), evaluate, config, metric="score", clock=clock)
    history = trainer.fit()
    return history.steps_done, trainer.horizon.total_steps, trainer.horizon.warmup_steps, history.stopped, history.lrs


@pytest.mark.parametrize("job", sorted(JOBS))
def test_no_preset_sets_a_time_budget_and_quick_names_its_steps(job: str) -> None:
    cls, presets = JOBS[job]
    for name, preset in presets.items():
        assert "max_train_seconds" not in preset, f"{job} {name}"
        assert make_config(cls, preset, {}).max_train_seconds is None
    assert make_config(cls, presets["quick"], {}).max_steps == QUICK_STEPS[job]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_the_quick_plan_does_not_depend_on_the_clock(job: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls, presets = JOBS[job]
    config = make_config(cls, presets["quick"], {"progress": False})
    plans = []
    for seconds_per_call in (1e-4, 60.0):  # a fast machine, and one where every step takes minutes
        clock = Clock(seconds_per_call)
        monkeypatch.setattr(time, "perf_counter", clock)
        monkeypatch.setattr(time, "monotonic", clock)
        plans.append(_plan(config, clock))
    assert plans[0] == plans[1]
    steps, horizon, _, stopped, lrs = plans[0]
    assert steps == horizon == QUICK_STEPS[job] and stopped == "max_steps" and len(lrs) == steps
