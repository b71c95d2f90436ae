"""An MC-dropout lever spec shared by the sequence tasks' levers tools (`python -m training.<task>.levers`).

A lever is one MC configuration: T (masks), last-k (None = every layer with dropout), the inference dropout rate
(None = the trained rates) and the sites live at MC time. `parse_lever(spec, base)` reads a SPEC of comma-separated
`key=value`s over `base` (the artifact's serving defaults): `T`, `k` (`all` = None), `rate` (`job` = None) and
`sites` (`+`-joined, e.g. `hidden+attention`); ValueError names the bad key or value. `lever_parser`,
`load_levers`, `served_lever` and `emit` are the tools' shared command line, serving-default lever and output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from models.core.device import resolve_dtype
from models.core.dropout import validate_sites
from models.core.predictor import PredictorOptions
from models.registry import LOADERS


@dataclasses.dataclass(frozen=True)
class Lever:
    """One MC configuration: masks, last-k (None = every layer), inference rate (None = trained), live sites."""

    samples: int
    last_k: int | None
    rate: float | None
    sites: frozenset[str]


def parse_lever(spec: str, base: Lever) -> Lever:
    """`base` with the SPEC's keys (module docstring) replaced; ValueError names a bad key or value."""
    lever = base
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        try:
            if key == "T":
                lever = dataclasses.replace(lever, samples=int(value))
            elif key == "k":
                lever = dataclasses.replace(lever, last_k=None if value == "all" else int(value))
            elif key == "rate":
                lever = dataclasses.replace(lever, rate=None if value == "job" else float(value))
            elif key == "sites":
                lever = dataclasses.replace(lever, sites=validate_sites(value.split("+")))
            else:
                raise ValueError(f"unknown key {key!r} (T, k, rate, sites)")
        except ValueError as exc:
            raise ValueError(f"lever {spec!r}: {exc}") from exc
    if lever.samples < 1 or (lever.last_k is not None and lever.last_k < 1) or not (
            lever.rate is None or 0.0 < lever.rate < 1.0):
        raise ValueError(f"lever {spec!r}: T and k must be ≥ 1 and a rate in (0, 1)")
    return lever


def parse_levers(specs: list[str], defaults: dict[str, str], base: Lever) -> dict[str, Lever]:
    """{name: Lever} of `--lever NAME=SPEC` arguments (`defaults` when there are none); ValueError for a bad one."""
    if any("=" not in s or not s.partition("=")[0] for s in specs):
        raise ValueError(f"--lever takes NAME=SPEC (e.g. 'whole=k=all'), got {specs}")
    named = dict(s.partition("=")[::2] for s in specs) if specs else defaults
    return {name: parse_lever(spec, base) for name, spec in named.items()}


def lever_parser(prog: str, description: str, defaults: dict[str, str]) -> argparse.ArgumentParser:
    """The levers tools' shared arguments: --artifact, --cache-dir, --lever (repeatable), --dtype, --device,
    --json-out; a tool adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--artifact", required=True, type=Path)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--lever", action="append", default=[], metavar="NAME=SPEC",
                        help="a lever to compare (repeatable; default: " + "; ".join(
                            f"{k}={v}" for k, v in defaults.items()) + ")")
    parser.add_argument("--dtype", default="auto", help="compute dtype (auto: bf16 where the CPU computes it fast)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json-out", type=Path)
    return parser


def served_lever(predictor: Any) -> Lever:
    """The artifact's serving defaults as a lever: its calibrated T, last-k, trained rates and live sites."""
    return Lever(int(predictor.manifest.calibration.get("mc_samples", predictor.manifest.default_mc_samples)),
                 predictor.last_k, None, frozenset(predictor.sites))


def emit(result: dict[str, Any], table: str, json_out: Path | None) -> None:
    """Print the tool's Markdown `table`; write the whole `result` as JSON to `json_out` when given."""
    print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))


def load_levers(parser: argparse.ArgumentParser, args: argparse.Namespace, task: str,
                defaults: dict[str, str]) -> tuple[Any, dict[str, Lever]]:
    """Logging on; the artifact's predictor at --device / --dtype; the --lever arguments over its serving defaults
    (`defaults` when none; a bad one exits 2 with usage through `parser`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = PredictorOptions(device=args.device, dtype=resolve_dtype(args.dtype, args.device))
    predictor = LOADERS[task](args.artifact, options)
    try:
        return predictor, parse_levers(args.lever, defaults, served_lever(predictor))
    except ValueError as exc:
        parser.error(str(exc))
