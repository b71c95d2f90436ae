"""Multi-process training under `torchrun` (DistributedDataParallel): process group, rank helpers and the
few collectives the shared Trainer and the jobs need.

Contract:
- `init_distributed()` reads torchrun's environment (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
  `MASTER_PORT`). With `WORLD_SIZE` > 1 it joins the process group (NCCL when CUDA is available, gloo
  otherwise) and, on CUDA, makes `cuda:<LOCAL_RANK>` the current device, so a job's plain `"cuda"` means
  this process's GPU. Without torchrun (or with one process) it does nothing: every helper then answers
  as a single main process and every collective is a no-op. Idempotent.
- `is_main_process()`: rank 0 (always True without a process group). Only it logs progress, evaluates,
  writes checkpoints and the artifact.
- `main_process_first()`: a context in which rank 0 runs first and the others wait at a barrier, then
  run the same block (downloads and extractions into a shared cache happen once).
- `artifact_on_main(finish)`: the one step every job ends with: rank 0 runs `finish()` (evaluation,
  calibration, writing the artifact) and every rank returns its path; the others wait meanwhile.
- `broadcast_text` / `broadcast_ints`: rank 0's value on every rank. Tensors only (no pickle): text goes
  as UTF-8 bytes in a uint8 tensor.
- `cleanup()` leaves the process group (after a final barrier).
Collectives are blocking: every rank must call them in the same order (the Trainer does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: global rank, rank on its host and number of processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_info() -> DistInfo:
    """Rank facts as torchrun sets them in the environment (single process when they are absent)."""
    return DistInfo(_env_int("RANK", 0), _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1))


def is_distributed() -> bool:
    """True once this process is in a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed() -> DistInfo:
    """Join torchrun's process group when there is more than one process (see module docstring)."""
    info = env_info()
    if info.world_size <= 1 or not dist.is_available():
        return DistInfo()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(info.local_rank)
        # NCCL is the only fast GPU backend; gloo is the CPU one (and what the tests run).
        dist.init_process_group(backend="nccl" if cuda else "gloo", rank=info.rank, world_size=info.world_size)
        log.info("rank %d/%d joined the process group (%s)", info.rank, info.world_size, dist.get_backend())
    return info


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return get_rank() == 0


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group after a last barrier (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first; the others run it after rank 0 finished it (see module docstring)."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def _device() -> torch.device:
    # NCCL moves CUDA tensors only; gloo CPU ones.
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_ints(values: list[int]) -> list[int]:
    """Rank 0's `values` on every rank (each rank passes a list of the same length)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=_device())
    dist.broadcast(tensor, src=0)
    return [int(v) for v in tensor.tolist()]


def broadcast_text(text: str | None) -> str:
    """Rank 0's `text` on every rank (the others may pass None)."""
    if not is_distributed():
        return text or ""
    data = (text or "").encode("utf-8") if is_main_process() else b""
    (length,) = broadcast_ints([len(data)])
    buffer = torch.zeros(length, dtype=torch.uint8, device=_device())
    if is_main_process() and length:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).decode("utf-8")


def artifact_on_main(finish: Callable[[], Path]) -> Path:
    """Rank 0 runs `finish()` (evaluate, calibrate, write the artifact) and returns its path; every other
    rank waits and returns the same path. An exception on rank 0 propagates there; torchrun then stops
    the waiting ranks."""
    path = finish() if is_main_process() else None
    return Path(broadcast_text(str(path) if path is not None else None))


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel when in a process group of several processes, else unchanged."""
    if not is_distributed():
        return model
    if device.type != "cuda":
        return nn.parallel.DistributedDataParallel(model)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return nn.parallel.DistributedDataParallel(model, device_ids=[index])


def gradient_sync(model: nn.Module, sync: bool) -> Any:
    """A context for one micro-batch's backward: DDP's `no_sync()` when `sync` is False (gradient
    accumulation all-reduces only on the micro-batch that completes a step), a null context otherwise."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return nullcontext()
