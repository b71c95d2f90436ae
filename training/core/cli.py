"""The command-line entry point every training job shares (`python -m training.<task>`, or under
`torchrun --nproc-per-node N -m training.<task>` for DistributedDataParallel on N processes)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models.core.loading import CheckpointError
from training.core import distributed
from training.core.config import C, parse_args
from training.core.datafiles import DataFileError


def job_main(
    config_cls: type[C],
    presets: Mapping[str, Mapping[str, Any]],
    run: Callable[[C, str, Path, Path], Path],
    prog: str,
    argv: Sequence[str] | None,
) -> int:
    """Parse the job's config, set up logging, run it; exit status 0 once the artifact is written (its
    path is printed on stdout); bad arguments exit with status 2; a bad data file (DataFileError, raised
    before anything is trained or written) prints `error: <file>, line <n>: <problem>` on stderr, without a
    traceback, and returns 1 (so does an unusable `--base-model`, CheckpointError); other errors propagate.

    Under torchrun this joins the process group first (training.core.distributed) and leaves it at the end;
    only rank 0 logs below WARNING and prints the path (`run` must end with `distributed.artifact_on_main`).
    """
    config, paths = parse_args(config_cls, presets, argv, prog=prog)
    info = distributed.init_distributed()
    if not logging.getLogger().handlers:
        prefix = f"[rank {info.rank}] " if info.world_size > 1 else ""
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    if info.rank != 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports progress for the whole job
    try:
        path = run(config, paths.preset, paths.output_dir, paths.cache_dir)
    except (DataFileError, CheckpointError) as exc:  # the user's file or checkpoint: the message says what to fix
        print(f"error: {exc}", file=sys.stderr, flush=True)
        distributed.cleanup()  # every rank read the same files and fails alike
        return 1
    # Only on success: after an error the other ranks are blocked in some other collective, and torchrun
    # stops them when this process exits.
    distributed.cleanup()
    if info.rank == 0:
        print(path, flush=True)
    return 0
