"""The training time budget (`TrainConfig.max_train_seconds`): when to stop, and the LR horizon that fits it.

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

from training.core.checkpoint import TrainHistory
from training.core.config import TrainConfig
from training.core.schedules import Horizon

# Step times the estimate takes its median over: a busy spell shorter than half of it (a test run on a
# shared machine) moves neither the estimate nor the LR horizon.
STEP_WINDOW = 100


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
        recent = sorted(step_times[-STEP_WINDOW:])
        per_step = recent[len(recent) // 2]
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
