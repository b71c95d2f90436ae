"""One rank of a 2-process DDP run of the shared Trainer (started by test_distributed.py, not a test).

    python -m tests.training.core.ddp_worker RANK WORLD STORE_FILE OUT_DIR

Joins a gloo group through a file store (no TCP port, so parallel test runs cannot clash), trains the
regression model of test_loop with gradient accumulation 2, and writes its final weights
(`rank<R>.safetensors`) and what it saw (`rank<R>.json`) to OUT_DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from tests.training.core.test_loop import Batches, Model, X, Y, loss_fn
from training.core.config import TrainConfig
from training.core.loop import Trainer


def main(rank: int, world: int, store: str, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = Model()
    seen: list[int] = []
    evals = 0

    def counted_loss(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.extend(int(i) for i in batch["index"])
        return loss_fn(m, batch)

    def evaluate() -> dict[str, float]:
        nonlocal evals
        evals += 1
        return {"mse": float(torch.nn.functional.mse_loss(model(X), Y))}

    class Indexed(Batches):  # the test_loop batches, with each example's index
        def __iter__(self):
            order = torch.randperm(len(X), generator=torch.Generator().manual_seed(self.epoch))
            for i in range(0, len(X), self.batch_size):
                index = order[i: i + self.batch_size]
                yield {"x": X[index], "y": Y[index], "index": index}

    config = TrainConfig(epochs=2, lr=5e-2, grad_accum=2, warmup_ratio=0.1, progress=False, max_train_seconds=3600.0)
    trainer = Trainer(model, counted_loss, Indexed(), evaluate, config, metric="mse", greater_is_better=False)
    history = trainer.fit()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "seen": seen, "evals": evals, "steps": history.steps_done, "scores": [e["mse"] for e in history.evals],
        "samples": history.samples_seen, "wrapped": type(trainer.model).__name__,
    }))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
