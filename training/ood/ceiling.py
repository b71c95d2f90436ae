"""`python -m training.ood.ceiling --task sentiment|translation|generation --artifact artifacts/<name>/<version>
[--cache-dir .cache] [--layers 0,1,2] [--k 10] [--rate 0.05] [--top 10] [--device cpu] [--json-out FILE]`:
how far the OOD signals of an artifact could go, on its own validation sets only (training/core/ood_ceiling.py:
every raw candidate of an OOD fit, the served detector, a logistic regression fitted on the validation probes
themselves, scored out of fold, which bounds any mix of those signals, and its small mixes of one to three
candidates by forward selection). Prints a Markdown table (and writes the
whole report as JSON with `--json-out`). Exit status 0 on success, 2 on bad arguments; errors propagate.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from models.core.ood import METHODS
from models.core.predictor import PredictorOptions
from models.registry import LOADERS
from training.core.ood_ceiling import ceiling, markdown
from training.core.ood_sets import OODSettings
from training.ood.tasks import POOLING, SETS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ood.ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(SETS))
    parser.add_argument("--artifact", required=True, type=Path, help="the artifact directory")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--layers", default=None, help="hidden-state layers, comma list (default: all)")
    parser.add_argument("--k", type=int, default=10, help="the k of kNN (k-th nearest training feature)")
    parser.add_argument("--rate", type=float, default=0.05, help="share of in-domain texts the line flags")
    parser.add_argument("--top", type=int, default=10, help="candidates shown, best AUROC first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 0.0 < args.rate < 1.0:
        parser.error(f"--rate {args.rate} must be in (0, 1)")
    if not args.artifact.is_dir():
        parser.error(f"--artifact {args.artifact} is not a directory")
    try:
        asked = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        parser.error(f"--layers {args.layers!r} must be a comma list of integers")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    predictor = LOADERS[args.task](args.artifact, PredictorOptions(device=args.device, dtype="float32"))
    available = predictor.ood_feature_layers()
    if asked is not None and not all(0 <= layer < available for layer in asked):
        parser.error(f"--layers {args.layers!r}: this model has layers 0..{available - 1}")
    layers = asked if asked is not None else list(range(available))
    if predictor.ood is not None:  # the served detector reads its own layers
        layers += [layer for layer in predictor.ood.layers if layer not in layers]
    settings = OODSettings(layers=layers, methods=[m for m in METHODS if m != "hybrid"], k=args.k,
                           pooling=POOLING.get(args.task, "mean"), max_flag_rate=args.rate)
    report = ceiling(predictor, SETS[args.task](predictor, args.cache_dir), settings)
    print(markdown(report, args.top))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
