"""An MC-dropout lever spec shared by the sequence tasks' levers tools (`python -m training.<task>.levers`).

A lever is one MC configuration: T (masks), last-k (None = every layer with dropout), the inference dropout rate
(None = the trained rates) and the sites live at MC time. `parse_lever(spec, base)` reads a SPEC of comma-separated
`key=value`s over `base` (the artifact's serving defaults): `T`, `k` (`all` = None), `rate` (`job` = None) and
`sites` (`+`-joined, e.g. `hidden+attention`); ValueError names the bad key or value.
"""

from __future__ import annotations

import dataclasses

from models.core.dropout import validate_sites


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
