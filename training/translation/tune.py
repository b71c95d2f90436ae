"""`python -m training.translation.tune [--preset quick] [--cache-dir .cache] [--output reports/translation_tuning]
--setting 'NAME=--field value ...' [--setting ...] [--common '--field value ...']`: train the translation model once
per setting (the preset, then `--common`, then the setting's own fields, as the job parses them) and compare their
learning curves: greedy chrF of the periodic validation verses (training/translation/curves.py) against training
wall-clock, plus validation token NLL. This is how the preset's settings are chosen: on validation, at the same
work (`--max-steps` in `--common`), on the machine that ran it; the test books are never read.

Each finished run is written at once to OUTPUT/<NAME>.json (config, history with the curve, final and best chrF,
steps, seconds), so a comparison that is stopped keeps what it finished and a rerun skips settings already there
(delete the file to redo one). OUTPUT/summary.json and OUTPUT/learning_curves.png compare every run in OUTPUT.
Nothing is written under artifacts/. Exit status 0, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.core import reports
from training.core.config import parse_args
from training.core.jobs import start_job
from training.translation.build import build_model, build_tokenizer
from training.translation.config import TranslationConfig
from training.translation.job import DATASETS, PRESETS, TASK, held_out_parts, train

log = logging.getLogger(__name__)


def parse_setting(text: str) -> tuple[str, list[str]]:
    """'NAME=--field value ...' → (NAME, argv). ValueError when NAME is missing or not a plain file name."""
    name, _, args = text.partition("=")
    name = name.strip()
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"--setting {text!r}: expected NAME=--field value ... (NAME: letters, digits, - _ .)")
    return name, shlex.split(args)


def run_setting(config: TranslationConfig, preset: str, cache_dir: Path) -> dict[str, Any]:
    """Train one setting (no evaluation beyond periodic validation) and return its record."""
    started = time.perf_counter()
    device, _ = start_job(config, TASK, preset, cache_dir, config.device)
    data = DATASETS[config.data](config, cache_dir)
    with tempfile.TemporaryDirectory(prefix="tune-") as scratch:  # the tokenizer and nothing else: no resume
        tokenizer = build_tokenizer(config, data.splits["train"], Path(scratch))
    model = build_model(config, tokenizer).to(device)
    parts = held_out_parts(config, data)
    history = train(config, model, tokenizer, data, parts["validation_periodic"], device, None)
    curve = [e for e in history["evals"] if "chrf" in e]
    return {"config": config.to_dict(), "preset": preset, "history": history,
            "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer),
            "final_chrf": curve[-1]["chrf"] if curve else None,
            "best_chrf": max((e["chrf"] for e in curve), default=None),
            "best_nll": min((e["nll"] for e in history["evals"]), default=None),
            "steps": history["summary"]["steps"], "train_seconds": history["summary"]["train_seconds"],
            "seconds": round(time.perf_counter() - started, 1)}


def summarise(output: Path) -> dict[str, Any]:
    """summary.json and learning_curves.png over every run recorded in `output`."""
    runs = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(output.glob("*.json"))
            if p.name != "summary.json"}
    table = {name: {k: run[k] for k in ("final_chrf", "best_chrf", "best_nll", "steps", "train_seconds",
                                        "parameters", "vocab")} for name, run in runs.items()}
    (output / "summary.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    if runs:
        reports.plot_learning_curves(output / "learning_curves.png", {n: r["history"] for n, r in runs.items()},
                                     "chrf", "greedy chrF, periodic validation verses")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.translation.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--output", type=Path, default=Path("reports/translation_tuning"))
    parser.add_argument("--common", default="", help="fields every setting gets, e.g. '--max-steps 1000'")
    parser.add_argument("--setting", action="append", required=True, help="NAME=--field value ... (repeatable)")
    args = parser.parse_args(argv)
    try:
        settings = [parse_setting(text) for text in args.setting]
        configs = [(name, parse_args(TranslationConfig, PRESETS, ["--preset", args.preset, *shlex.split(args.common),
                                                                  *extra], "tune")[0]) for name, extra in settings]
    except ValueError as exc:
        print(f"python -m training.translation.tune: {exc}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for number, (name, config) in enumerate(configs, 1):
        record = args.output / f"{name}.json"
        if record.is_file():
            log.info("setting %d/%d %s: already in %s, skipped", number, len(configs), name, record)
            continue
        log.info("setting %d/%d %s: %s", number, len(configs), name, " ".join(dict(settings)[name]) or "(preset)")
        result = run_setting(config, args.preset, args.cache_dir)
        staged = record.with_suffix(".json.tmp")
        staged.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        staged.replace(record)  # a killed run leaves no half-written record behind
        log.info("setting %s: chrF %.2f (best %.2f) after %d steps, %.0f s", name, result["final_chrf"] or 0.0,
                 result["best_chrf"] or 0.0, result["steps"], result["train_seconds"])
    for name, row in summarise(args.output).items():
        print(f"{name}\t{row}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
