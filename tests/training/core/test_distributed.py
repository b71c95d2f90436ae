"""Multi-process training: sharding, the single-process fallbacks, the Trainer under DDP (2 gloo ranks),
and `torchrun --nproc-per-node 2` runs of the real jobs' tiny presets writing exactly one valid artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from models.core.artifacts import list_artifacts, verify_artifact
from training.core import distributed
from training.core.batching import LengthGroupedBatches, ShardedBatches, shard_batches, shard_list

ROOT = Path(__file__).resolve().parents[3]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                            "MASTER_PORT"}}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.mark.parametrize("n, world", [(7, 2), (8, 2), (1, 2), (10, 3), (2, 4)])
def test_shards_cover_every_batch_with_equal_counts(n: int, world: int) -> None:
    items = list(range(n))
    shards = [shard_list(items, rank, world) for rank in range(world)]
    assert {len(s) for s in shards} == {-(-n // world)}  # same step count on every rank
    assert set().union(*shards) == set(items)
    if n % world == 0:
        assert sorted(i for s in shards for i in s) == items  # no padding needed: disjoint

    class Sized:
        def __len__(self) -> int:
            return n

        def __iter__(self):
            return iter(items)

    assert [list(ShardedBatches(Sized(), rank, world)) for rank in range(world)] == shards


def test_length_grouped_batches_shard_their_index_lists() -> None:
    ids = [[1] * (1 + i % 30) for i in range(100)]
    make = lambda: LengthGroupedBatches(ids, [0] * 100, batch_size=8, pad_id=0, seed=3)  # noqa: E731
    whole = make().batch_indices()
    ranks = [shard_batches(make(), rank, 2) for rank in range(2)]
    assert [len(r) for r in ranks] == [7, 7] and len(whole) == 13
    assert [r.batch_indices() for r in ranks] == [shard_list(whole, rank, 2) for rank in range(2)]
    assert sum(len(b["labels"]) for b in ranks[1]) == sum(len(b) for b in shard_list(whole, 1, 2))


def test_without_a_process_group_every_helper_is_the_single_main_process() -> None:
    assert distributed.init_distributed() == distributed.DistInfo()
    assert distributed.is_main_process() and distributed.get_world_size() == 1 and distributed.get_rank() == 0
    assert distributed.broadcast_ints([3, 4]) == [3, 4] and distributed.broadcast_text("x") == "x"
    with distributed.main_process_first():
        distributed.barrier()
    assert distributed.artifact_on_main(lambda: Path("a/b")) == Path("a/b")
    batches = [1, 2, 3]
    assert shard_batches(batches, 0, 1) is batches


def test_trainer_under_ddp_keeps_ranks_in_step(tmp_path: Path) -> None:
    """Two gloo ranks on disjoint halves of the data end with identical weights (gradients were averaged),
    saw every example once per epoch between them, and only rank 0 evaluated (its scores reached rank 1)."""
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.training.core.ddp_worker", str(rank), "2", str(store),
                               str(tmp_path)], cwd=ROOT, env=_child_env()) for rank in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["wrapped"] == r1["wrapped"] == "DistributedDataParallel"
    # 8 batches of 8 → 4 per rank → 2 optimizer steps per epoch (grad_accum 2), 2 epochs
    assert r0["steps"] == r1["steps"] == 4 and r0["samples"] == r1["samples"] == 128
    assert sorted(r0["seen"][:32] + r1["seen"][:32]) == list(range(64))  # epoch 0 split between the ranks
    assert set(r0["seen"][:32]).isdisjoint(r1["seen"][:32])
    assert r0["evals"] == 2 and r1["evals"] == 0 and r0["scores"] == r1["scores"]
    w0, w1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    assert w0.keys() == w1.keys() and all(w0[k].equal(w1[k]) for k in w0)


# translation's run takes as long as sentiment's (≈12 s on 2 busy cores): kept out of the default suite.
@pytest.mark.parametrize("task", ["sentiment", pytest.param("translation", marks=pytest.mark.slow)])
def test_torchrun_two_processes_write_one_valid_artifact(task: str, tmp_path: Path) -> None:
    # --standalone: the rendezvous binds port 0, so the OS picks a free port (no clash between runs).
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", f"training.{task}", "--preset", "tiny", "--output-dir", str(tmp_path / "artifacts"),
               "--cache-dir", str(tmp_path / "cache"), "--epochs", "2"]  # what is tested is the ranks, not the fit
    done = subprocess.run(command, cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    (artifact,) = list_artifacts(tmp_path / "artifacts", task)
    assert verify_artifact(artifact).predictor_task == task
    assert [p.name for p in (tmp_path / "artifacts" / task).iterdir()] == [artifact.name]  # no stray staging dirs
    assert done.stdout.split() == [str(artifact)]  # rank 0 alone prints the path
    assert "[rank 0]" in done.stderr and "INFO [rank 1]" not in done.stderr  # rank 0 alone logs progress
    assert "training.core.loop: step" in done.stderr
