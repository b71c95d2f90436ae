"""A training job's OOD step: fit the detector at the end of training through the code `python -m training.ood`
runs (training/core/ood_fit.py on the task's `ood_sets`), and put it into the artifact being written.

`fit_for_job(config, predictor, make_sets, pooling)` → (detector, report) or None:
- None, with a log line saying why, when `config.ood` is false (the `tiny` presets: synthetic data has no
  out-of-domain counterpart worth a threshold), when the sets have no training inputs (`training.calibrate`
  without `--train-file`: the statistics describe the training data), or when the probes' pinned archives cannot
  be fetched (`FetchError`: the trained model is kept; `python -m training.ood` adds the statistics later);
- otherwise `fit_ood` on `make_sets()` at every feature layer of the predictor, every method, kNN k = 10. A
  user's files (`--data file`) are fitted too: the threshold comes from their own validation inputs whatever
  the probes, and the built-in probes (Bible verses, Shakespeare, Austen, news templates) only choose the
  method and layer; a probe kind the chosen score hardly separates from the user's validation inputs
  (validation AUROC < WEAK_KIND_AUROC) may be their domain: the log warns and the report lists it under
  `weak_probe_kinds`.
`with_ood(manifest, save, fitted)` → (manifest, save): the manifest with `metrics["ood"]` (the report, whose
`table` is probe kind × measure test AUROC) and `data["ood"]` (where the sets came from), and a staging callback
that also writes `ood/` and `reports/ood.json` (training/core/ood_artifact.py); unchanged when `fitted` is None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.core.artifacts import Manifest
from models.core.ood import OODDetector
from training.core.fetch import FetchError
from training.core.ood_artifact import ood_manifest, write_ood_files
from training.core.ood_fit import fit_ood
from training.core.ood_sets import OODSets, OODSettings

log = logging.getLogger(__name__)
Fitted = tuple[OODDetector, dict[str, Any]]
WEAK_KIND_AUROC = 0.75  # below this a probe kind is hardly out of the user's domain


def fit_for_job(config: Any, predictor: Any, make_sets: Callable[[], OODSets], pooling: str = "mean") -> Fitted | None:
    """See module docstring. `predictor` is the serving predictor built in memory (training/core/predicting.py)."""
    if not getattr(config, "ood", False):
        log.info("OOD statistics: off (--ood false); the artifact serves ood_score null")
        return None
    try:
        sets = make_sets()
    except FetchError as exc:
        log.warning("OOD statistics: skipped, a probe archive is not available (%s); add them later with "
                    "python -m training.ood", exc)
        return None
    if not sets.bank:
        log.info("OOD statistics: skipped, no training inputs to describe (give the data the model was trained "
                 "on with --train-file); the artifact serves ood_score null")
        return None
    settings = OODSettings(layers=list(range(predictor.ood_feature_layers())), pooling=pooling)
    detector, report = fit_ood(predictor, sets, settings)
    by_kind = report["candidates"][report["chosen"]["candidate"]]["validation_auroc_by_kind"]
    report["weak_probe_kinds"] = sorted(kind for kind, auroc in by_kind.items() if auroc < WEAK_KIND_AUROC)
    if report["weak_probe_kinds"] and getattr(config, "data", None) == "file":
        log.warning("OOD statistics: the probe kinds %s look like your validation inputs (validation AUROC < %.2f): "
                    "if that text is your domain, its flags mean little", report["weak_probe_kinds"], WEAK_KIND_AUROC)
    return detector, report


def with_ood(manifest: Manifest, save: Callable[[Path], None],
             fitted: Fitted | None) -> tuple[Manifest, Callable[[Path], None]]:
    """See module docstring."""
    if fitted is None:
        return manifest, save
    detector, report = fitted

    def save_all(staging: Path) -> None:
        save(staging)
        write_ood_files(staging, detector, report)

    return ood_manifest(manifest, report), save_all
