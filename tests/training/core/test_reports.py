"""Strict JSON and the PNG figures."""

import json
import math
from pathlib import Path

import numpy as np
import torch

from training.core import reports

PNG = b"\x89PNG\r\n\x1a\n"


def test_json_ready_makes_strict_json(tmp_path: Path) -> None:
    data = {"nan": math.nan, "inf": [math.inf], "t": torch.tensor([1.5, 2.0]), "np": np.float32(0.5),
            "path": Path("a/b"), 3: (1, 2)}
    path = reports.write_metrics_json(tmp_path / "r" / "m.json", data)
    loaded = json.loads(path.read_text())
    assert loaded == {"nan": None, "inf": [None], "t": [1.5, 2.0], "np": 0.5, "path": "a/b", "3": [1, 2]}


def test_figures_are_png(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 2, generator=generator), dim=1)
    labels = torch.randint(0, 2, (200,), generator=generator)
    history = {"losses": [1.0 / (i + 1) for i in range(50)], "lrs": [1e-3] * 50,
               "evals": [{"step": 25, "nll": 0.5}, {"step": 50, "nll": 0.4}]}
    curves = {"entropy": {"coverage": [0.5, 1.0], "risk": [0.01, 0.1]}}
    paths = [
        reports.plot_reliability(tmp_path / "rel.png", {"before": probs, "after": probs}, labels),
        reports.plot_training_curves(tmp_path / "curves.png", history, "nll"),
        reports.plot_risk_coverage(tmp_path / "rc.png", curves, 0.05),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
