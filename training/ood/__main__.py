"""`python -m training.ood --task sentiment|translation|generation --artifact artifacts/<name>/<version>
[--cache-dir .cache] [--output-dir artifacts] [--layers 0,1,2,3] [--device cpu]`: fit OOD statistics for an existing
artifact on the data its job used (training/core/ood_fit.py on the task's `artifact_ood_sets`, the same code and
sets the jobs fit at the end of training, training/core/ood_job.py) and write them as a NEW artifact version
(training/core/ood_artifact.py); prints its path. Exit status 0 on success, 2 on bad
arguments; errors propagate.
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
from training.core.ood_artifact import write_with_ood
from training.core.ood_fit import fit_ood
from training.core.ood_sets import OODSettings
from training.ood.tasks import POOLING, SETS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(SETS))
    parser.add_argument("--artifact", required=True, type=Path, help="the artifact directory to start from")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--output-dir", type=Path, default=Path("artifacts"), help="root the new version goes to")
    parser.add_argument("--layers", default=None, help="candidate hidden-state layers, comma list (default: all)")
    parser.add_argument("--methods", default=",".join(METHODS), help="candidate methods, comma list")
    parser.add_argument("--k", type=int, default=10, help="the k of kNN (k-th nearest training feature)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    predictor = LOADERS[args.task](args.artifact, PredictorOptions(device=args.device, dtype="float32"))
    layers = ([int(x) for x in args.layers.split(",")] if args.layers
              else list(range(predictor.ood_feature_layers())))
    settings = OODSettings(layers=layers, methods=args.methods.split(","), k=args.k,
                           pooling=POOLING.get(args.task, "mean"))
    detector, report = fit_ood(predictor, SETS[args.task](predictor, args.cache_dir), settings)
    path = write_with_ood(args.artifact, args.output_dir, detector, report)
    print(json.dumps({"artifact": str(path), "chosen": report["chosen"], "test": report["test"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
