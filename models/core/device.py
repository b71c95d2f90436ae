"""Device and precision choices: where a model runs and in which compute dtype (inference and training).

- CUDA: weights are cast to bf16/fp16 (halves memory and uses tensor cores).
- CPU: weights stay fp32 and matmuls run under bf16 autocast only where the processor has fast bf16
  units (AMX or AVX512-BF16); LayerNorm and softmax stay fp32 under autocast, which keeps accuracy.
"""

from __future__ import annotations

import contextlib
import logging
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

LOG = logging.getLogger(__name__)
_WARNED: list[bool] = []  # one warning per process, not one per evaluation

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when /proc/cpuinfo lists AMX-BF16 or AVX512-BF16 (Linux); False where it cannot tell."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(name: str) -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; an explicit CUDA request without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return name


def resolve_dtype(name: str, device: str) -> str:
    """'auto' → bfloat16 on CUDA (float16 if the GPU lacks bf16) and on CPUs with fast bf16, else float32."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; choose from {sorted(DTYPES)} or 'auto'")
        return name
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def training_autocast(requested: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for a training job's forward passes when `requested` and the device computes bf16 fast
    (CUDA with bf16, a CPU with AMX/AVX512-BF16); float32 otherwise, with one warning. On a CPU without
    those units bf16 is emulated and ~20x slower, and the result differs from float32 only by rounding, so a
    preset asks for bf16 and every machine trains the same model at the speed it can."""
    if not requested:
        return contextlib.nullcontext()
    fast = torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu" and cpu_has_fast_bf16()
    if not fast:
        if not _WARNED:
            _WARNED.append(True)
            LOG.warning("bf16 asked for, but this %s has no fast bf16 units: training in float32", device.type)
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def place_model(model: nn.Module, device: torch.device, dtype: str) -> nn.Module:
    """Move to `device`; on CUDA also cast weights to `dtype` (on CPU autocast does the work)."""
    model = model.to(device)
    if device.type == "cuda" and dtype != "float32":
        model = model.to(DTYPES[dtype])
    return model


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU when asked; nothing otherwise (CUDA weights are already cast)."""
    if device.type == "cpu" and dtype == "bfloat16":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
