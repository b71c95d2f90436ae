"""`python -m training.export`: write a device package of a trained artifact (training/export/package.py).

    python -m training.export --model sentiment --format onnx [--quantize int8] [--output-dir exports]
    python -m training.export --model sentiment --format coreml [--artifacts-dir artifacts] [--version V]

`--model` is the task name; the newest artifact is used unless `--version` pins one. `--quantize int8` also
writes the int8 model after its accuracy guard on the first `--guard-items` reviews of the artifact's validation
split (the pinned IMDB archive in `--cache-dir`, split with the manifest's seed and sizes; the guard chooses
nothing, it only refuses). Prints the package directory; exits 1 on a refusal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from models.core.artifacts import read_manifest, resolve_artifact
from training.export.package import FORMATS, write_package
from training.export.quantize import QuantizationRefusedError


def split_reviews(artifact: Path, cache_dir: Path, split: str,
                  count: int | None = None) -> tuple[list[str], list[int]]:
    """The first `count` (None: all) reviews and label ids of the artifact's `split` ("validation" or "test";
    the pinned IMDB archive in `cache_dir`, split with the manifest's seed and sizes, as the job split it)."""
    from training.core.fetch import IMDB, ensure_archive
    from training.sentiment.data import load_imdb

    config = read_manifest(artifact).training_config or {}
    data = load_imdb(ensure_archive(IMDB, cache_dir), int(config.get("split_seed", 1234)),
                     int(config.get("validation_size", 5000)), int(config.get("test_size", 5000)))
    texts, labels = data.splits[split].texts, data.splits[split].labels
    return list(texts[:count]), list(labels[:count])


def validation_reviews(artifact: Path, cache_dir: Path, count: int) -> tuple[list[str], list[int]]:
    """The first `count` reviews and label ids of the artifact's validation split (`split_reviews`)."""
    return split_reviews(artifact, cache_dir, "validation", count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="task name of the artifact, e.g. sentiment")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--version", default=None, help="artifact version (default: the newest)")
    parser.add_argument("--output-dir", type=Path, default=Path("exports"))
    parser.add_argument("--quantize", choices=["int8"], default=None, help="onnx only: also an int8 model, guarded")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"), help="where the pinned data archive is")
    parser.add_argument("--guard-items", type=int, default=1000, help="validation reviews for the int8 guard")
    args = parser.parse_args(argv)
    artifact = resolve_artifact(args.artifacts_dir, args.model, args.version)
    validation = validation_reviews(artifact, args.cache_dir, args.guard_items) if args.quantize else None
    try:
        target = write_package(artifact, args.output_dir, args.format, quantize=args.quantize, validation=validation)
    except QuantizationRefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0
