"""The task-agnostic training loop shared by every job (sentiment now; translation and generation next).

Contract of `Trainer(model, loss_fn, train_batches, evaluate, config, metric=..., greater_is_better=...)`:
- `loss_fn(model, batch) -> scalar tensor` is the task loss of one micro-batch (the trainer adds the L1
  penalty, divides by `grad_accum`, clips, steps AdamW and the LR schedule).
- `train_batches` is re-iterated once per epoch; if it has `set_epoch(epoch)` that is called first (so it
  can reshuffle reproducibly) and if it has `__len__` the schedule's horizon comes from it, otherwise
  `config.max_steps` must be set.
- `evaluate() -> {name: float}` runs under `model.eval()` and `torch.no_grad()`; `metric` names the value
  that selects the best weights and drives early stopping.
- `fit()` returns a `TrainHistory`; on return the model holds the best weights seen by `evaluate` (the
  last weights when there was no evaluation). It stops at the end of the epochs, at `max_steps`, when
  `patience` evaluations bring no gain, or, only when one is given, when the time budget
  `max_train_seconds` (training and its evaluations, summed over resumed runs) would be exceeded. Without
  a budget the plan (steps, LR horizon) does not depend on the clock.
- After its first ESTIMATE_AFTER steps it logs how long the rest will take on this machine
  (training.core.budget.estimate_left); the progress bar and the periodic log lines carry the same estimate.
- With a checkpoint directory, a checkpoint is written after every evaluation: model weights as
  safetensors, optimizer/scheduler/progress as a torch file read back with `weights_only=True`; best weights
  live in `<dir>/best/`. `config.resume` continues from `<dir>/last/` (ValueError if absent or written
  under a different config).
Under `torchrun` (training.core.distributed, process group joined by the job's entry point) the Trainer wraps
`model` in DistributedDataParallel, gives each rank its share of `train_batches` (training.core.batching.
shard_batches; per-rank `len` sets the horizon), all-reduces gradients only on the micro-batch that ends a
gradient accumulation, runs `evaluate` on rank 0 only and broadcasts its scores (so `evaluate` must call
the job's own, unwrapped model), and takes rank 0's time-budget decisions, so every rank steps, stops and
schedules the LR alike. Only rank 0 logs and writes checkpoints; state is taken from the unwrapped module.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from models.core.device import training_autocast
from training.core import distributed
from training.core.batching import shard_batches
from training.core.budget import TimeBudget, estimate_left
from training.core.checkpoint import Checkpointer, TrainHistory, unwrap
from training.core.config import TrainConfig
from training.core.optim import count_samples, param_groups
from training.core.progress import format_duration
from training.core.schedules import Horizon, ScheduleParams, build_scheduler, warmup_steps_for

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], torch.Tensor]
EvalFn = Callable[[], Mapping[str, float]]
ESTIMATE_AFTER = 10  # steps of this run before the time left is logged (the first steps warm caches up)


class Trainer:
    """See module docstring."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_batches: Iterable[Any],
        evaluate: EvalFn,
        config: TrainConfig,
        *,
        metric: str,
        greater_is_better: bool = True,
        checkpoint_dir: str | None = None,
        device: torch.device | str = "cpu",
        is_main_process: bool | None = None,
        count: Callable[[Any], int] = count_samples,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.device = torch.device(device)
        self.world = distributed.get_world_size()
        self.model = distributed.wrap_model(model, self.device)
        self.batches = shard_batches(train_batches, distributed.get_rank(), self.world)
        self.loss_fn, self.evaluate = loss_fn, evaluate
        self.config, self.metric, self.sign = config, metric, 1.0 if greater_is_better else -1.0
        self.is_main = distributed.is_main_process() if is_main_process is None else is_main_process
        self.count, self.clock = count, clock
        self.steps_per_epoch = self._steps_per_epoch()
        total = self.steps_per_epoch * config.epochs if self.steps_per_epoch else 0
        if config.max_steps is not None:
            total = min(total, config.max_steps) if total else config.max_steps
        if total < 1:
            raise ValueError("no training steps: give a sized batch iterable or config.max_steps")
        self.horizon = Horizon(total, warmup_steps_for(total, config.warmup_steps, config.warmup_ratio))
        self.planned_steps = total  # before any budget fitting
        self.budget = TimeBudget(config, self.horizon)
        self.optimizer = torch.optim.AdamW(param_groups(unwrap(model), config.weight_decay), lr=config.lr)
        params = ScheduleParams(config.final_lr_ratio, config.gamma, config.cycle_steps, config.cycle_gamma,
                                config.decay_fraction)
        self.scheduler = build_scheduler(self.optimizer, config.schedule, self.horizon, params)
        self.l1_params = list(self.optimizer.param_groups[0]["params"]) if config.l1 > 0 else []
        self.ckpt = Checkpointer(checkpoint_dir, config, self.is_main) if checkpoint_dir else None
        self.history = TrainHistory(planned_steps=total)
        self._best_in_memory: dict[str, torch.Tensor] | None = None
        self._stale_evals = 0
        self._epoch, self._batch_in_epoch = 0, 0
        self._log_every = 0

    def _steps_per_epoch(self) -> int:
        if not hasattr(self.batches, "__len__"):
            return 0
        return math.ceil(len(self.batches) / self.config.grad_accum)  # type: ignore[arg-type]

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> TrainHistory:
        """Train until a stop condition (module docstring); returns the history, best weights loaded."""
        cfg = self.config
        if cfg.resume:
            self._resume()
        self.model.train()
        h = self.history
        show = cfg.progress and self.is_main and sys.stderr.isatty()
        # Without a terminal (pipes, container logs) a log line every ~5 % of the run stands in for the bar.
        self._log_every = 0 if show or not self.is_main else max(1, self.planned_steps // 20)
        bar = tqdm(total=self.planned_steps, initial=h.steps_done, disable=not show, unit="step", dynamic_ncols=True)
        started = self.clock() - h.train_seconds - h.eval_seconds
        autocast = training_autocast(cfg.bf16, self.device)
        # A run resumed after its patience ran out stays stopped.
        stopped = "early_stopping" if cfg.patience and self._stale_evals >= cfg.patience else None
        window: list[float] = []  # seconds of recent steps, for the time budget
        while stopped is None and h.steps_done < self.planned_steps and self._epoch < cfg.epochs:
            stopped = self._run_epoch(autocast, started, window, bar)
        bar.close()
        h.stopped = stopped or ("max_steps" if h.steps_done >= self.planned_steps else "completed")
        if not h.evals or h.evals[-1]["step"] != h.steps_done:
            self._validate()
        self._restore_best()
        h.epochs_done = self._epoch
        if self.is_main:
            log.info("training stopped (%s) after %d steps; best %s=%s at step %s", h.stopped, h.steps_done,
                     self.metric, h.best_score, h.best_step)
        return h

    def _run_epoch(self, autocast: Any, started: float, window: list[float], bar: Any) -> str | None:
        """Continue the current epoch from `_batch_in_epoch`; returns a stop reason, or None at the end
        of the epoch or of the horizon. A one-batch lookahead tells the last batch of the epoch, so a
        partial gradient accumulation there still makes a step."""
        cfg, h = self.config, self.history
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(self._epoch)  # type: ignore[attr-defined]
        end = object()
        iterator = iter(self.batches)
        upcoming = next(iterator, end)
        if upcoming is end:
            raise ValueError("train_batches yielded no batches")
        index, micro, loss_sum, samples, t0 = -1, 0, 0.0, 0, self.clock()
        while upcoming is not end:
            batch, upcoming, index = upcoming, next(iterator, end), index + 1
            if index < self._batch_in_epoch:
                continue  # consumed before the checkpoint we resumed from
            end_of_epoch = upcoming is end
            steps_now = micro + 1 >= cfg.grad_accum or end_of_epoch
            with distributed.gradient_sync(self.model, steps_now):  # DDP all-reduces only when stepping
                with autocast:
                    loss = self.loss_fn(self.model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {h.steps_done}")
                total = loss + cfg.l1 * sum(p.abs().sum() for p in self.l1_params) if self.l1_params else loss
                (total / cfg.grad_accum).backward()
            # Examples over all ranks: this rank's count × world size (off only by a short or padded last batch).
            micro, loss_sum = micro + 1, loss_sum + float(loss.detach())
            samples += self.count(batch) * self.world
            self._batch_in_epoch = index + 1
            if not steps_now:
                continue
            lr = self._optimizer_step()
            elapsed = self.clock() - t0
            h.train_seconds += elapsed
            h.record_step(loss_sum / micro, lr, samples / max(elapsed, 1e-9), samples)
            window.append(elapsed)
            left = estimate_left(cfg, h, window, self.steps_per_epoch)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / micro:.4f}", lr=f"{lr:.2e}",
                            samples_s=f"{samples / max(elapsed, 1e-9):.1f}", left=format_duration(left.seconds))
            if self.is_main and len(window) == ESTIMATE_AFTER and h.steps_done < h.planned_steps:
                log.info("training: %s", left.describe())
            if self._log_every and h.steps_done % self._log_every == 0:
                recent = h.losses[-self._log_every:]
                log.info("step %d/%d: loss %.4f, lr %.2e, %.1f samples/s, %.0f s, %s left", h.steps_done,
                         self.planned_steps, sum(recent) / len(recent), lr,
                         h.samples_seen / max(h.train_seconds, 1e-9), h.train_seconds, format_duration(left.seconds))
            if end_of_epoch:  # before validating, so a checkpoint written there resumes at the next epoch
                self._epoch, self._batch_in_epoch = self._epoch + 1, 0
            due = h.steps_done % cfg.eval_every == 0 if cfg.eval_every else end_of_epoch
            stopped = self._validate() if due else None
            if stopped is None:
                stopped = self._check_limits(started, window)
            if stopped is not None or h.steps_done >= self.planned_steps:
                return stopped
            micro, loss_sum, samples, t0 = 0, 0.0, 0, self.clock()
        return None

    def _optimizer_step(self) -> float:
        cfg = self.config
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def _check_limits(self, started: float, window: list[float]) -> str | None:
        """The time budget (training.core.budget) on rank 0's clock: with several ranks, rank 0's decision (stop,
        LR horizon) holds on all of them, so none leaves the gradient all-reduce early and the LR schedule
        stays identical."""
        stopped = self.budget.check(self.clock() - started, window, self.history)
        if self.world == 1 or self.config.max_train_seconds is None:
            return stopped
        flag, total, warmup = distributed.broadcast_ints(
            [stopped is not None, self.horizon.total_steps, self.horizon.warmup_steps])
        self.horizon.total_steps, self.horizon.warmup_steps = total, warmup
        self.history.planned_steps = total
        return "time_budget" if flag else None

    def _validate(self) -> str | None:
        """Run `evaluate`, track the best weights, checkpoint; returns "early_stopping" or None."""
        h, cfg = self.history, self.config
        t0 = self.clock()
        self.model.eval()
        scores: dict[str, float] = {}
        if self.world == 1 or distributed.is_main_process():
            with torch.no_grad():
                scores = {k: float(v) for k, v in self.evaluate().items()}
        if self.world > 1:  # rank 0 evaluated; the same scores drive every rank's best/early-stop decisions
            scores = json.loads(distributed.broadcast_text(json.dumps(scores)))
        self.model.train()
        if self.metric not in scores:
            raise KeyError(f"evaluate() returned {sorted(scores)}, no {self.metric!r}")
        h.eval_seconds += self.clock() - t0
        h.evals.append({"step": h.steps_done, "train_seconds": h.train_seconds, **scores})
        score = scores[self.metric]
        if h.best_score is None or self.sign * (score - h.best_score) > cfg.min_delta:
            h.best_score, h.best_step, self._stale_evals = score, h.steps_done, 0
            self._keep_best()
        else:
            self._stale_evals += 1
        if self.is_main:
            log.info("step %d: %s", h.steps_done, ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
        if self.ckpt:
            self.ckpt.save_last(unwrap(self.model), self._state())
        if cfg.patience and self._stale_evals >= cfg.patience:
            return "early_stopping"
        return None

    # -- best weights and checkpoints ---------------------------------------------------------------

    def _keep_best(self) -> None:
        if self.ckpt:
            self.ckpt.save_best(unwrap(self.model))
        else:
            self._best_in_memory = {k: v.detach().clone() for k, v in unwrap(self.model).state_dict().items()}

    def _restore_best(self) -> None:
        if self.history.best_step is None or self.history.best_step == self.history.steps_done:
            return  # the current weights are the best (or nothing was evaluated)
        if self.ckpt:
            distributed.barrier()  # rank 0 wrote best/; the others read it
            self.ckpt.load_best(unwrap(self.model))
        elif self._best_in_memory is not None:
            unwrap(self.model).load_state_dict(self._best_in_memory)

    def _state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "horizon": [self.horizon.total_steps, self.horizon.warmup_steps],
            "epoch": self._epoch,
            "batch_in_epoch": self._batch_in_epoch,
            "stale_evals": self._stale_evals,
            "history": self.history.to_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def _resume(self) -> None:
        if self.ckpt is None:
            raise ValueError("config.resume is set but the trainer has no checkpoint directory")
        state = self.ckpt.load_last(unwrap(self.model))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.horizon.total_steps, self.horizon.warmup_steps = (int(x) for x in state["horizon"])
        self._epoch, self._batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        self._stale_evals = int(state["stale_evals"])
        self.history = TrainHistory.from_dict(state["history"])
        self.history.resumed_at.append(self.history.steps_done)
        torch.set_rng_state(state["torch_rng"])
        if self.is_main:
            log.info("resumed at step %d (epoch %d, batch %d)", self.history.steps_done, self._epoch,
                     self._batch_in_epoch)
