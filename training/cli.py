"""The command-line entry point every training job shares (`python -m training.<task>`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.config import C, parse_args


def job_main(
    config_cls: type[C],
    presets: Mapping[str, Mapping[str, Any]],
    run: Callable[[C, str, Path, Path], Path],
    prog: str,
    argv: Sequence[str] | None,
) -> int:
    """Parse the job's config, set up logging, run it; exit status 0 once the artifact is written (its
    path is printed on stdout); bad arguments exit with status 2; errors propagate."""
    config, paths = parse_args(config_cls, presets, argv, prog=prog)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    print(run(config, paths.preset, paths.output_dir, paths.cache_dir), flush=True)
    return 0
