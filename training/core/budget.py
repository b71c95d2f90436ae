"""The optional training time budget (`TrainConfig.max_train_seconds`, off by default: presets are defined by
their steps, so what a run trains does not depend on the machine), and the estimate of the time left.

`estimate_left(steps_left, step_times, evals_left, eval_seconds)` is what the training loop logs after its
first steps: steps left × the median of the recent step times, plus the validations left × their mean time
when one has been timed (`eval_seconds` None: not yet, and the estimate says so).

`TimeBudget(config, horizon).check(elapsed_s, step_times, history)` is called after every optimizer step
with the seconds spent so far (training and validation, summed over resumed runs) and the step times of
this run. It returns "time_budget" when one more step and the final validation would not fit, else None;
with `config.fit_schedule_to_budget` it also moves `horizon` (in place) and `history.planned_steps`.

The horizon is re-estimated after every step from the median of the last `STEP_WINDOW` step times (robust
to a few slow steps, e.g. a busy machine) and may move back up, never beyond the planned steps, so one
slow spell early on cannot cut the run short for good. The horizon shapes the LR only: training ends at
the planned steps or the clock, never because a busy spell shrank the horizon (past it the schedule holds
its final LR).
"""

from __future__ import annotations

from dataclasses import dataclass

from training.core.checkpoint import TrainHistory
from training.core.config import TrainConfig
from training.core.progress import format_duration
from training.core.schedules import Horizon

# Step times the estimate takes its median over: a busy spell shorter than half of it (a test run on a
# shared machine) moves neither the estimate nor the LR horizon.
STEP_WINDOW = 100


def median_step_seconds(step_times: list[float]) -> float:
    """Median of the last STEP_WINDOW step times (robust to a few slow steps); 0 for none."""
    recent = sorted(step_times[-STEP_WINDOW:])
    return recent[len(recent) // 2] if recent else 0.0


@dataclass(frozen=True)
class Estimate:
    """Seconds of training left on this machine and how they were estimated."""

    steps_left: int
    step_seconds: float
    evals_left: int
    eval_seconds: float | None

    @property
    def seconds(self) -> float:
        return self.steps_left * self.step_seconds + self.evals_left * (self.eval_seconds or 0.0)

    def describe(self) -> str:
        """'about 10 min 20 s left on this machine (365 steps × 1.62 s median step + 4 validations × 12.0 s)'."""
        evals = ""
        if self.evals_left:
            timed = f" × {self.eval_seconds:.1f} s" if self.eval_seconds is not None else ", not timed yet"
            evals = f" + {self.evals_left} validation{'s' if self.evals_left > 1 else ''}{timed}"
        return (f"about {format_duration(self.seconds)} left on this machine ({self.steps_left} steps × "
                f"{self.step_seconds:.2f} s median step{evals})")


def estimate_left(config: TrainConfig, history: TrainHistory, step_times: list[float],
                  steps_per_epoch: int) -> Estimate:
    """The Estimate of the module docstring for a run at `history.steps_done` of `history.planned_steps`:
    validations every `config.eval_every` steps (0: at each epoch end) plus the final one, at the mean of those
    timed so far. Early stopping can only make the run shorter."""
    done, planned = history.steps_done, history.planned_steps
    every = config.eval_every or steps_per_epoch or planned
    evals = planned // every - done // every + (1 if planned % every else 0)  # the final validation
    timed = history.eval_seconds / len(history.evals) if history.evals else None
    return Estimate(max(0, planned - done), median_step_seconds(step_times), max(0, evals), timed)


class TimeBudget:
    """See module docstring. Remembers the horizon as planned, before any fitting."""

    def __init__(self, config: TrainConfig, horizon: Horizon) -> None:
        self.config, self.horizon = config, horizon
        self.planned_steps, self.planned_warmup = horizon.total_steps, horizon.warmup_steps

    def check(self, elapsed_s: float, step_times: list[float], history: TrainHistory) -> str | None:
        """"time_budget" to stop now, else None (may refit the horizon); see module docstring."""
        budget, h = self.config.max_train_seconds, history
        if budget is None or not step_times:
            return None
        remaining = budget - elapsed_s
        per_step = median_step_seconds(step_times)
        eval_cost = h.eval_seconds / max(1, len(h.evals))  # the final validation still has to fit
        if remaining - eval_cost < per_step:
            return "time_budget"
        if self.config.fit_schedule_to_budget and len(step_times) >= 10:
            left = self.planned_steps - h.steps_done
            evals_left = left // self.config.eval_every if self.config.eval_every else 0
            affordable = int((remaining - eval_cost * (evals_left + 1)) / per_step)
            total = min(self.planned_steps, h.steps_done + max(1, affordable))
            if total != self.horizon.total_steps:
                self.horizon.total_steps = total
                self.horizon.warmup_steps = min(self.planned_warmup, total - 1)
                h.planned_steps = total  # the LR horizon; the bar counts planned steps
        return None
