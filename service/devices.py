"""Device/dtype resolution for serving (delegated to `models.core.device`, the one source of truth that
`place_model`/`autocast_context` also follow), the torch thread count, and GPU memory readings.

"auto" device = CUDA when visible, else CPU; "auto" dtype = bfloat16 on CUDA (float16 where the GPU
lacks bf16), bfloat16 on CPUs with AMX-BF16/AVX512-BF16 units (weights stay fp32, matmuls autocast),
else float32. torch is imported inside the functions so `import service` stays cheap.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" without a GPU raises RuntimeError."""
    from models.core.device import resolve_device as resolve

    return resolve(requested)


def resolve_dtype(requested: str, device: str) -> str:
    """The compute dtype name for `device` ("auto" as in the module docstring; explicit ones pass through)."""
    from models.core.device import resolve_dtype as resolve

    return resolve(requested, device)


def set_torch_threads(threads: int | None) -> None:
    """Apply the intra-op thread count once at start-up (None keeps torch's default)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)
    log.info("torch intra-op threads set to %d", threads)


def resolve_workers(requested: int | str, device: str, threads: int | None) -> int:
    """Inference workers: `requested`, or for "auto" 1 on CUDA (its kernels queue on one device anyway) and on a
    CPU with one torch thread, else 2. An unusable device is left for the model loading to report."""
    if requested != "auto":
        return int(requested)
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return 1 if cuda or (threads or torch.get_num_threads()) < 2 else 2


def torch_threads() -> int:
    """The process's intra-op thread count (read once at start-up, after `set_torch_threads`)."""
    import torch

    return torch.get_num_threads()


def use_threads(threads: int) -> None:
    """Run this thread's next torch ops on `threads` intra-op threads. torch keeps the count per thread (and hands
    the last one set to threads started later), so an inference thread that serves several models sets it before
    every batch: `inference_workers` / each model's concurrent batches decide its share."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def gpu_memory_bytes(device: str) -> tuple[float, float]:
    """(allocated, reserved) bytes on a CUDA device, read at scrape time."""
    import torch

    return float(torch.cuda.memory_allocated(device)), float(torch.cuda.memory_reserved(device))


def release_memory(device: str) -> None:
    """Collect what a released model left behind and, on CUDA, return its cached blocks to the driver, so a
    hot swap's old version does not keep holding device memory."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
