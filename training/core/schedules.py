"""Learning-rate schedules as LambdaLR multipliers of the peak LR, each with a warm-up.

Step s counts optimizer steps from 0 (the LR used by the s-th optimizer step is peak × f(s)).
With w warm-up steps and a horizon of N steps:
- warm-up, s ≤ w: f rises monotonically to exactly 1 at s = w (linear; 1-cycle uses a cosine ramp)
- then, with progress p = (s − w) / (N − 1 − w) ∈ [0, 1] and r = final_lr_ratio:
  - onecycle:           cosine anneal 1 → r
  - exponential:        γ^(s − w), γ defaulting to r^(1/(N − 1 − w)) so the last step is at r
  - cyclic_exponential: cycles of `cycle_steps` steps; cycle c starts at peak cycle_gamma^c and decays
                        exponentially to r × that peak within the cycle, then restarts at the next peak
  - constant:           1
  - wsd (warm-up, stable, decay): 1 until p = 1 − d (d = decay_fraction), then linear to r at p = 1. An
                        under-trained model still learns fast at the peak; a cosine anneal spends most of a short
                        run at a low LR (Hu et al. 2024, MiniCPM; Hägele et al. 2024).
The horizon is a mutable `Horizon` so the trainer can shrink it to what a time budget allows; the
multipliers read it on every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class Horizon:
    """Total optimizer steps N and warm-up steps w of a run (mutable: see module docstring)."""

    total_steps: int
    warmup_steps: int

    def decay_length(self) -> int:
        """Steps after the peak, at least 1 (avoids division by zero for very short runs)."""
        return max(1, self.total_steps - 1 - self.warmup_steps)


@dataclass(frozen=True)
class ScheduleParams:
    """Shape parameters shared by the schedules (see module docstring)."""

    final_lr_ratio: float = 0.01
    gamma: float | None = None
    cycle_steps: int | None = None
    cycle_gamma: float = 0.5
    decay_fraction: float = 0.2


Multiplier = Callable[[int], float]


def _warmup(step: int, warmup: int, cosine: bool) -> float:
    fraction = (step + 1) / (warmup + 1)
    return (1.0 - math.cos(math.pi * fraction)) / 2.0 if cosine else fraction


def onecycle(horizon: Horizon, params: ScheduleParams) -> Multiplier:
    def f(step: int) -> float:
        if step <= horizon.warmup_steps:
            return _warmup(step, horizon.warmup_steps, cosine=True)
        p = min(1.0, (step - horizon.warmup_steps) / horizon.decay_length())
        r = params.final_lr_ratio
        return r + (1.0 - r) * (1.0 + math.cos(math.pi * p)) / 2.0

    return f


def exponential(horizon: Horizon, params: ScheduleParams) -> Multiplier:
    def f(step: int) -> float:
        if step <= horizon.warmup_steps:
            return _warmup(step, horizon.warmup_steps, cosine=False)
        gamma = params.gamma or params.final_lr_ratio ** (1.0 / horizon.decay_length())
        return gamma ** (step - horizon.warmup_steps)

    return f


def cyclic_exponential(horizon: Horizon, params: ScheduleParams) -> Multiplier:
    def f(step: int) -> float:
        if step <= horizon.warmup_steps:
            return _warmup(step, horizon.warmup_steps, cosine=False)
        length = params.cycle_steps or max(1, math.ceil((horizon.decay_length() + 1) / 4))
        offset = step - horizon.warmup_steps
        cycle, position = divmod(offset, length)
        peak = params.cycle_gamma**cycle
        # Within a cycle: exponential decay from the cycle's peak toward r × peak.
        return peak * params.final_lr_ratio ** (position / length)

    return f


def constant(horizon: Horizon, params: ScheduleParams) -> Multiplier:
    def f(step: int) -> float:
        if step <= horizon.warmup_steps:
            return _warmup(step, horizon.warmup_steps, cosine=False)
        return 1.0

    return f


def wsd(horizon: Horizon, params: ScheduleParams) -> Multiplier:
    def f(step: int) -> float:
        if step <= horizon.warmup_steps:
            return _warmup(step, horizon.warmup_steps, cosine=False)
        p = min(1.0, (step - horizon.warmup_steps) / horizon.decay_length())
        into_decay = (p - (1.0 - params.decay_fraction)) / params.decay_fraction
        return 1.0 - (1.0 - params.final_lr_ratio) * min(1.0, max(0.0, into_decay))

    return f


SCHEDULES: dict[str, Callable[[Horizon, ScheduleParams], Multiplier]] = {
    "onecycle": onecycle,
    "exponential": exponential,
    "cyclic_exponential": cyclic_exponential,
    "constant": constant,
    "wsd": wsd,
}


def warmup_steps_for(total_steps: int, warmup_steps: int | None, warmup_ratio: float) -> int:
    """Explicit warm-up steps, else round(ratio × total); always < total so a decay phase exists."""
    steps = warmup_steps if warmup_steps is not None else round(warmup_ratio * total_steps)
    return max(0, min(steps, total_steps - 1))


def multiplier(name: str, horizon: Horizon, params: ScheduleParams) -> Multiplier:
    """The multiplier function of schedule `name`; KeyError-free: unknown names raise ValueError."""
    try:
        factory = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose from {sorted(SCHEDULES)}") from None
    return factory(horizon, params)


def build_scheduler(optimizer: Optimizer, name: str, horizon: Horizon, params: ScheduleParams) -> LambdaLR:
    """A LambdaLR applying schedule `name` to every parameter group of `optimizer`."""
    return LambdaLR(optimizer, multiplier(name, horizon, params))
