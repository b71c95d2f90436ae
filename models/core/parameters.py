"""Validation of a request's task `parameters` (a JSON object): typed reads with ranges, each failure an
InputError (HTTP 422) naming the parameter. Shared by the sequence tasks' predictors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from models.core.predictor import InputError


class Parameters:
    """Typed, range-checked access to one request's parameters; unknown names are refused up front."""

    def __init__(self, task: str, parameters: Mapping[str, Any], known: Iterable[str]) -> None:
        known = set(known)
        unknown = sorted(set(parameters) - known)
        if unknown:
            raise InputError(f"unknown {task} parameters {unknown}; known: {sorted(known)}")
        self.values = parameters

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise InputError(f"{name} {value} is outside {low}..{high}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must be a number, got {value!r}")
        if not low <= float(value) <= high:
            raise InputError(f"{name} {value} is outside {low}..{high}")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.values.get(name, default)
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}")
        return value

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        options = list(choices)
        value = self.values.get(name, default)
        if value not in options:
            raise InputError(f"{name} must be one of {options}, got {value!r}")
        return value

    def strings(self, name: str, max_items: int, max_length: int) -> tuple[str, ...]:
        """A string or a list of non-empty strings (at most `max_items`, each at most `max_length` chars)."""
        value = self.values.get(name, [])
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            raise InputError(f"{name} must be a non-empty string or a list of them, got {value!r}")
        if len(items) > max_items or any(len(v) > max_length for v in items):
            raise InputError(f"{name}: at most {max_items} strings of at most {max_length} characters")
        return tuple(items)
