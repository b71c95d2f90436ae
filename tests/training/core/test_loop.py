"""The shared Trainer on a tiny regression problem: optimisation, regularisers, stopping, best weights,
time budget (with a fake clock, no sleeping) and exact resumption from a checkpoint."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from training.core.checkpoint import Checkpointer
from training.core.config import TrainConfig
from training.core.loop import Trainer, count_samples, param_groups

GEN = torch.Generator().manual_seed(0)
X = torch.randn(64, 4, generator=GEN)
Y = X @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.3


class Batches:
    """Sized, re-iterable, reshuffled per epoch like the real batchers."""

    def __init__(self, batch_size: int = 8) -> None:
        self.batch_size, self.epoch = batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(X) / self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(X), generator=torch.Generator().manual_seed(self.epoch))
        for i in range(0, len(X), self.batch_size):
            index = order[i : i + self.batch_size]
            yield {"x": X[index], "y": Y[index]}


class Model(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.norm(self.linear(x))))).squeeze(-1)


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


def make(model: nn.Module, scores=None, batches=None, **overrides):
    config = TrainConfig(**{"epochs": 3, "lr": 5e-2, "warmup_ratio": 0.1, "progress": False, **overrides})
    checkpoint_dir = overrides.pop("checkpoint_dir", None)

    def evaluate() -> dict[str, float]:
        if scores is not None:
            return {"mse": scores.pop(0)}
        with torch.no_grad():
            return {"mse": float(nn.functional.mse_loss(model(X), Y))}

    return Trainer(model, loss_fn, batches or Batches(), evaluate, config, metric="mse", greater_is_better=False,
                   checkpoint_dir=checkpoint_dir)


def params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_loss_falls_and_history_is_recorded() -> None:
    model = Model()
    history = make(model, epochs=8).fit()
    assert history.steps_done == 8 * 8 and history.stopped == "max_steps"
    assert sum(history.losses[-8:]) < 0.3 * sum(history.losses[:8])
    assert len(history.lrs) == len(history.losses) == len(history.samples_per_second) == 64
    assert [e["step"] for e in history.evals] == [8 * e for e in range(1, 9)]  # one per epoch
    assert history.samples_seen == 8 * 64 and history.epochs_done == 8
    assert history.summary()["best_step"] == history.best_step


def test_weight_decay_skips_biases_and_norms() -> None:
    model = Model()
    decay, no_decay = param_groups(model, 0.1)
    assert {id(p) for p in decay["params"]} == {id(model.linear.weight), id(model.out.weight)}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 4  # two biases, norm weight and bias


def test_gradient_accumulation_matches_a_bigger_batch() -> None:
    a, b = Model(), Model()
    ta = make(a, epochs=1, grad_clip=None, batches=Batches(16))
    tb = make(b, epochs=1, grad_clip=None, grad_accum=2)
    ta.fit(), tb.fit()
    assert tb.history.steps_done == 4
    torch.testing.assert_close(params(a), params(b), rtol=1e-5, atol=1e-6)


def test_l1_penalty_shrinks_weights() -> None:
    plain, sparse = Model(), Model()
    make(plain, epochs=4, weight_decay=0.0).fit()
    make(sparse, epochs=4, weight_decay=0.0, l1=0.5).fit()
    assert sparse.linear.weight.abs().sum() < 0.8 * plain.linear.weight.abs().sum()


def test_early_stopping_and_best_weights_restored() -> None:
    model = Model()
    seen: list[torch.Tensor] = []
    scores = [5.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    trainer = make(model, scores=scores, epochs=6, patience=2)
    original = trainer.evaluate
    trainer.evaluate = lambda: (seen.append(params(model).clone()), original())[1]
    history = trainer.fit()
    assert history.stopped == "early_stopping"
    assert [e["step"] for e in history.evals] == [8, 16, 24, 32]
    assert history.best_step == 16 and history.best_score == 1.0
    torch.testing.assert_close(params(model), seen[1])  # the weights evaluated at step 16


def test_bf16_autocast_and_non_finite_loss() -> None:
    history = make(Model(), epochs=1, bf16=True).fit()
    assert all(math.isfinite(x) for x in history.losses)
    bad = make(Model(), epochs=1)
    bad.loss_fn = lambda model, batch: loss_fn(model, batch) * float("nan")
    with pytest.raises(FloatingPointError):
        bad.fit()


class FakeClock:
    """Advances one second per step: `tick` is called once per micro-batch by the loss function."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_budget_stops_cleanly_and_shrinks_the_schedule() -> None:
    clock = FakeClock()
    model = Model()

    def timed_loss(m: nn.Module, batch) -> torch.Tensor:
        clock.now += 1.0
        return loss_fn(m, batch)

    trainer = make(model, epochs=10, max_train_seconds=30.0, eval_every=10)
    trainer.loss_fn, trainer.clock = timed_loss, clock
    history = trainer.fit()
    assert history.stopped in {"time_budget", "max_steps"}
    assert history.steps_done < 80 and clock.now <= 30.0
    assert history.planned_steps == history.steps_done < 80  # horizon shrunk to what fits
    assert history.lrs[-1] < 0.1 * 5e-2  # so the schedule annealed instead of being cut at a high LR
    assert history.evals[-1]["step"] == history.steps_done  # a final validation of the last weights


def test_a_slow_spell_early_does_not_cut_the_run_short() -> None:
    clock = FakeClock()
    calls = []

    def slow_then_fast(m: nn.Module, batch) -> torch.Tensor:
        calls.append(1)
        clock.now += 5.0 if len(calls) <= 10 else 1.0
        return loss_fn(m, batch)

    trainer = make(Model(), epochs=10, max_train_seconds=130.0)  # 80 steps: 10 × 5 s + 70 × 1 s fit
    trainer.loss_fn, trainer.clock = slow_then_fast, clock
    history = trainer.fit()
    assert history.steps_done == 80 and history.stopped == "max_steps"
    assert history.planned_steps == 80


def test_resume_continues_exactly(tmp_path) -> None:
    straight = Model(dropout=0.2)
    make(straight, epochs=3, eval_every=5).fit()

    clock = FakeClock()
    first = Model(dropout=0.2)

    def timed_loss(m: nn.Module, batch) -> torch.Tensor:
        clock.now += 1.0
        return loss_fn(m, batch)

    ckpt = str(tmp_path / "ckpt")
    interrupted = make(first, epochs=3, eval_every=5, checkpoint_dir=ckpt, max_train_seconds=13.5,
                       fit_schedule_to_budget=False)
    interrupted.loss_fn, interrupted.clock = timed_loss, clock
    assert interrupted.fit().stopped == "time_budget"
    assert Checkpointer(ckpt, interrupted.config).has_last

    torch.manual_seed(123)  # resumption must restore the RNG, whatever the state now
    resumed_model = Model(dropout=0.2)
    resumed = make(resumed_model, epochs=3, eval_every=5, checkpoint_dir=ckpt, resume=True)
    history = resumed.fit()
    assert history.resumed_at == [13]  # the checkpoint written by the final validation at the stop
    assert history.steps_done == 24
    torch.testing.assert_close(params(resumed_model), params(straight))


def test_resume_refuses_missing_or_different_checkpoints(tmp_path) -> None:
    with pytest.raises(ValueError, match="no checkpoint"):
        make(Model(), checkpoint_dir=str(tmp_path / "none"), resume=True).fit()
    ckpt = str(tmp_path / "ckpt")
    make(Model(), epochs=1, checkpoint_dir=ckpt).fit()
    with pytest.raises(ValueError, match="lr"):
        make(Model(), epochs=1, lr=0.5, checkpoint_dir=ckpt, resume=True).fit()
    # fields that do not change the training may differ
    make(Model(), epochs=1, checkpoint_dir=ckpt, resume=True, max_train_seconds=100.0).fit()


def test_count_samples() -> None:
    assert count_samples({"a": torch.zeros(3, 2)}) == 3
    assert count_samples((torch.zeros(5),)) == 5
    with pytest.raises(TypeError):
        count_samples({"a": [1, 2]})


def test_needs_a_length_or_max_steps() -> None:
    config = dataclasses.replace(TrainConfig(), progress=False)
    with pytest.raises(ValueError, match="no training steps"):
        Trainer(Model(), loss_fn, iter([]), lambda: {"mse": 0.0}, config, metric="mse")


def test_tied_parameters_are_stepped_once() -> None:
    """Marian ties one embedding matrix to four modules; AdamW must see it once."""
    from models.translation.model import build_marian_preset
    from training.core.loop import param_groups

    model = build_marian_preset("tiny", 50)
    params = [p for group in param_groups(model, 0.01) for p in group["params"]]
    assert len(params) == len({id(p) for p in params})
    assert {id(p) for p in params} == {id(p) for p in model.parameters() if p.requires_grad}


def test_the_time_left_is_logged_after_the_first_steps(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from training.core.loop import ESTIMATE_AFTER

    clock = FakeClock()

    def timed_loss(m: nn.Module, batch) -> torch.Tensor:
        clock.now += 2.0
        return loss_fn(m, batch)

    trainer = make(Model(), epochs=4, eval_every=8)  # 32 steps, validations at 8, 16, 24, 32
    original = trainer.evaluate
    trainer.loss_fn, trainer.clock = timed_loss, clock

    def timed_evaluate() -> dict[str, float]:
        clock.now += 5.0
        return original()

    trainer.evaluate = timed_evaluate
    with caplog.at_level(logging.INFO, logger="training.core.loop"):
        trainer.fit()
    (line,) = [m for m in caplog.messages if m.startswith("training: about")]
    assert ESTIMATE_AFTER == 10
    assert line == ("training: about 59 s left on this machine (22 steps × 2.00 s median step + 3 validations × 5.0 s)")


def test_the_estimate_says_when_validation_is_not_timed_yet() -> None:
    from training.core.budget import estimate_left
    from training.core.checkpoint import TrainHistory

    history = TrainHistory(planned_steps=32, steps_done=10)
    config = TrainConfig(eval_every=12)
    estimate = estimate_left(config, history, [1.0] * 9 + [50.0], steps_per_epoch=8)  # one slow step: the median
    assert estimate.seconds == 22.0 and estimate.evals_left == 3  # at 12, 24 and the final one at 32
    assert estimate.describe().endswith("(22 steps × 1.00 s median step + 3 validations, not timed yet)")
    at_epoch_ends = estimate_left(TrainConfig(), history, [1.0], steps_per_epoch=8)
    assert at_epoch_ends.evals_left == 3  # the ends of epochs 2, 3 and 4
