"""Report files of an artifact's `reports/` folder: metrics JSON and PNG figures.

- `json_ready(obj)` turns tensors/numpy/paths into JSON types and NaN/±inf into null (strict JSON:
  browsers and `jq` reject NaN). `write_metrics_json` writes it with sorted keys.
- Figures use matplotlib's object API with the Agg canvas (no global backend, no display needed):
  `plot_reliability` (one panel per named probability set, e.g. before/after temperature),
  `plot_training_curves` (loss, LR, validation score per step), `plot_risk_coverage`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.core.artifacts import Manifest, write_artifact
from training.core.scoring import ECE_BINS, ece, reliability_bins

METRICS_FILE = "metrics.json"
RELIABILITY_FILE = "reliability.png"
CURVES_FILE = "training_curves.png"
RISK_COVERAGE_FILE = "risk_coverage.png"


def json_ready(obj: Any) -> Any:
    """A copy of `obj` that `json.dumps(..., allow_nan=False)` accepts (see module docstring)."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return json_ready(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_ready(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_metrics_json(path: Path, metrics: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(metrics), indent=2, sort_keys=True, allow_nan=False) + "\n", "utf-8")
    return path


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_reliability(
    path: Path, panels: Mapping[str, torch.Tensor], labels: torch.Tensor, n_bins: int = ECE_BINS
) -> Path:
    """Reliability diagram: per panel (name → probs [N, C]) accuracy per confidence bin (bars) against
    the bin's mean confidence (dots) and the diagonal, ECE in the title; below, the examples per bin."""
    fig = Figure(figsize=(4.6 * len(panels), 5.6))
    grid = fig.subplots(2, len(panels), squeeze=False, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for column, (name, probs) in enumerate(panels.items()):
        ax, ax_count = grid[0][column], grid[1][column]
        bins = reliability_bins(probs, labels, n_bins)
        centres = [(lo + hi) / 2 for lo, hi in zip(bins["lower"], bins["upper"], strict=True)]
        width = 0.95 / n_bins
        filled = [i for i, n in enumerate(bins["count"]) if n]
        ax.bar([centres[i] for i in filled], [bins["accuracy"][i] for i in filled], width=width,
               color="tab:blue", alpha=0.8, label="accuracy")
        ax.plot([centres[i] for i in filled], [bins["confidence"][i] for i in filled], "o", color="tab:red",
                markersize=4, label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
               title=f"{name}\nECE({n_bins}) = {ece(probs, labels, n_bins):.4f}")
        ax.legend(loc="upper left", fontsize=8)
        ax_count.bar(centres, bins["count"], width=width, color="gray")
        ax_count.set(xlabel="confidence", ylabel="examples")
    fig.tight_layout()
    return _save(fig, path)


def plot_training_curves(path: Path, history: Mapping[str, Any], metric: str) -> Path:
    """Loss (raw and smoothed), learning rate, and the validation `metric` against optimizer step."""
    losses: Sequence[float] = history.get("losses", [])
    steps = list(range(1, len(losses) + 1))
    fig = Figure(figsize=(14, 4))
    ax_loss, ax_lr, ax_eval = fig.subplots(1, 3)
    ax_loss.plot(steps, losses, alpha=0.35, label="loss")
    span = max(1, len(losses) // 20)
    if len(losses) >= span:
        windows = [losses[max(0, i - span + 1): i + 1] for i in range(len(losses))]
        smooth = [sum(window) / len(window) for window in windows]
        ax_loss.plot(steps, smooth, label=f"mean of {span}")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(steps, history.get("lrs", []))
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
    evals = history.get("evals", [])
    ax_eval.plot([e["step"] for e in evals], [e.get(metric, math.nan) for e in evals], "o-")
    ax_eval.set(xlabel="step", ylabel=metric, title=f"validation {metric}")
    return _save(fig, path)


def plot_learning_curves(path: Path, runs: Mapping[str, Mapping[str, Any]], key: str, ylabel: str) -> Path:
    """Validation `key` against training wall-clock (minutes), one line per run (name → history with `evals`
    holding `train_seconds` and `key`): how settings compare at the same budget on the machine that ran them."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, history in runs.items():
        evals = [e for e in history.get("evals", []) if key in e]
        ax.plot([e["train_seconds"] / 60 for e in evals], [e[key] for e in evals], "o-", label=name)
    ax.set(xlabel="training wall-clock (min)", ylabel=ylabel, title=f"learning curve: validation {key}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_risk_coverage(path: Path, curves: Mapping[str, Mapping[str, Sequence[float]]], target_risk: float | None,
                       ylabel: str = "selective risk (error rate)", title: str = "risk-coverage") -> Path:
    """Selective risk against coverage, one line per measure (name → {coverage, risk}); `ylabel` names the
    loss when it is a quality loss (e.g. 1 − chrF) rather than an error rate; an "oracle" curve is dotted;
    no target line when `target_risk` is None (a target stated in another loss)."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(curve["coverage"], curve["risk"], label=name, linestyle=":" if name == "oracle" else "-")
    if target_risk is not None:
        ax.axhline(target_risk, color="k", linestyle="--", linewidth=1, label=f"target risk {target_risk:g}")
    ax.set(xlabel="coverage", ylabel=ylabel, xlim=(0, 1), title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_job_artifact(output_dir: Path, manifest: Manifest, save_model: Callable[[Path], None],
                       history: Mapping[str, Any], metric: str, plots: Callable[[Path], None] | None = None) -> Path:
    """Write a job's artifact (models.core.artifacts.write_artifact): `save_model(staging)` puts the model in,
    then `reports/` gets metrics.json (the manifest's task, version, calibration, dropout, data and
    metrics, plus the training history), the training curves of `metric` and whatever `plots(reports_dir)`
    draws. The manifest's sections are made JSON-ready first. Returns the artifact directory."""
    manifest.metrics = json_ready(manifest.metrics)
    manifest.calibration = json_ready(manifest.calibration)
    manifest.dropout = json_ready(manifest.dropout)

    def write_files(staging: Path) -> None:
        save_model(staging)
        out = staging / "reports"
        write_metrics_json(out / METRICS_FILE, {"task": manifest.task, "version": manifest.version,
                                                "calibration": manifest.calibration, "dropout": manifest.dropout,
                                                "data": manifest.data, **manifest.metrics, "history": history})
        plot_training_curves(out / CURVES_FILE, history, metric)
        if plots is not None:
            plots(out)

    return write_artifact(output_dir, manifest, write_files)

