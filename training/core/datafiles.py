"""A user's data files: reading CSV, TSV, JSONL and plain text with line numbers, checking them, and the seeded
stratified hold-out split of one file (docs/architecture.md §1, "Your data").

Contract:
- `DataFileError(path, problem, line)`: the one error a bad file raises; its message names the file, the line (when
  one line is at fault) and the problem, e.g. `tickets.csv, line 12: empty text in column 'text'`. The jobs read
  and check every given file before anything is trained or written, and `training.core.cli.job_main` prints the
  message without a traceback and exits with status 1.
- `file_format(path, allowed)`: the format from the suffix (`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`, `.txt`).
- `read_text(path)`: the whole file as UTF-8 (a BOM is dropped; invalid UTF-8 names its line and byte).
- `read_table(path, fmt)`: CSV (RFC 4180 quoting, via `csv`) or TSV (one record per line, tabs separate fields,
  no quoting) with a header line → (columns, records); every record must have as many fields as the header.
- `read_tsv_columns(path, columns)`: TSV with a fixed number of fields and an optional header (translation pairs).
- `read_jsonl(path)`: one JSON object per line → records. Blank lines are skipped in every format.
- `field_text(record, column, path, what)`: a record's non-empty string value, or a DataFileError naming why not.
- `holdout_split(labels, fractions, seed, path, lines)`: per label, a seeded shuffle dealt into the held-out splits
  (at least one example each, `round(fraction × n)` otherwise) with the rest as "train", so every label is in every
  split; a label with fewer examples than splits raises DataFileError. Unlabelled items: pass labels None.
- `file_record(path, role, fmt, rows)`: the manifest's record of a file (path, role, format, rows, sha256).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.core.artifacts import sha256_file

FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                           ".txt": "text"}


class DataFileError(ValueError):
    """A data file cannot be used: `path`, the 1-based `line` at fault (None: the file as a whole), `problem`."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path, self.problem, self.line = Path(path), problem, line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Record:
    """One record of a file: the line it starts on (1-based) and its values by column or key."""

    line: int
    values: Mapping[str, Any]


def file_format(path: Path, allowed: Sequence[str]) -> str:
    """The format of `path` from its suffix; DataFileError when it is not one of `allowed`."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt not in allowed:
        suffixes = ", ".join(sorted(s for s, f in FORMATS.items() if f in allowed))
        raise DataFileError(path, f"unknown file type {path.suffix or '(no suffix)'!r}; use one of {suffixes}")
    return fmt


def read_text(path: Path) -> str:
    """The file decoded as UTF-8 (see module docstring)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(path, "no such file") from None
    except OSError as exc:
        raise DataFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataFileError(path, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}); save the file "
                                  "as UTF-8", line) from None


def _check_header(path: Path, columns: list[str]) -> None:
    if not any(c.strip() for c in columns):
        raise DataFileError(path, "the first line must name the columns", 1)
    seen = set()
    for column in columns:
        if column in seen:
            raise DataFileError(path, f"column {column!r} appears twice in the header", 1)
        seen.add(column)


def _csv_rows(path: Path, text: str) -> list[tuple[int, list[str]]]:
    rows, start = [], 1
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((start, row))
            start = reader.line_num + 1  # a quoted field may span lines: the next record starts after this one
    except csv.Error as exc:
        raise DataFileError(path, f"malformed CSV: {exc}", start) from None
    return rows


def _tsv_rows(text: str) -> list[tuple[int, list[str]]]:
    return [(number, line.split("\t")) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_table(path: Path, fmt: str) -> tuple[list[str], list[Record]]:
    """(columns, records) of a CSV or TSV file with a header line (module docstring)."""
    text = read_text(path)
    rows = _csv_rows(path, text) if fmt == "csv" else _tsv_rows(text)
    if not rows:
        raise DataFileError(path, "the file is empty")
    (_, columns), body = rows[0], rows[1:]
    columns = [c.strip() for c in columns]
    _check_header(path, columns)
    records = []
    for line, row in body:
        if len(row) != len(columns):
            raise DataFileError(path, f"wrong number of {fmt.upper()} fields: expected {len(columns)} "
                                      f"({', '.join(columns)}), got {len(row)}", line)
        records.append(Record(line, dict(zip(columns, row, strict=True))))
    return columns, records


def read_tsv_columns(path: Path, columns: Sequence[str]) -> list[Record]:
    """A TSV file without quoting whose every line holds exactly len(`columns`) fields, keyed by `columns`; a first
    line equal to `columns` is a header and skipped. DataFileError on another field count or no records."""
    rows = _tsv_rows(read_text(path))
    if rows and [c.strip() for c in rows[0][1]] == list(columns):
        rows = rows[1:]
    records = []
    for line, row in rows:
        if len(row) != len(columns):
            raise DataFileError(path, f"wrong number of TSV fields: expected {len(columns)} ({', '.join(columns)}) "
                                      f"separated by tabs, got {len(row)}", line)
        records.append(Record(line, dict(zip(columns, row, strict=True))))
    if not records:
        raise DataFileError(path, "no records (the file is empty or holds only a header)")
    return records


def read_jsonl(path: Path) -> list[Record]:
    """One JSON object per non-blank line (module docstring)."""
    records = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(path, f"malformed JSON: {exc.msg} (column {exc.colno})", number) from None
        if not isinstance(value, dict):
            raise DataFileError(path, f"expected a JSON object, got {type(value).__name__}", number)
        records.append(Record(number, value))
    return records


def read_records(path: Path, fmt: str) -> list[Record]:
    """The records of a CSV, TSV (with header) or JSONL file; DataFileError when there are none."""
    records = read_jsonl(path) if fmt == "jsonl" else read_table(path, fmt)[1]
    if not records:
        raise DataFileError(path, "no records (only a header or blank lines)")
    return records


def require_columns(path: Path, columns: Sequence[str], needed: Mapping[str, str]) -> None:
    """DataFileError (line 1) when the header of a CSV/TSV file lacks one of `needed` (column → the option that
    names it)."""
    for column, option in needed.items():
        if column not in columns:
            raise DataFileError(path, f"missing column {column!r} (the header has: {', '.join(columns)}); name the "
                                      f"right one with {option}", 1)


def field_text(record: Record, column: str, path: Path, what: str = "text") -> str:
    """`record`'s value in `column`, stripped; DataFileError when it is missing, not a string or empty."""
    if column not in record.values:
        raise DataFileError(path, f"missing key {column!r}", record.line)
    value = record.values[column]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataFileError(path, f"{what} in {column!r} must be a string, got {type(value).__name__}", record.line)
    text = str(value).strip()
    if not text:
        raise DataFileError(path, f"empty {what} in column {column!r}", record.line)
    return text


def holdout_split(labels: Sequence[Any] | None, fractions: Mapping[str, float], seed: int, path: Path,
                  lines: Sequence[int]) -> dict[str, list[int]]:
    """Indices per split: "train" and each of `fractions` (module docstring); every list sorted. `labels` None:
    unlabelled items, one per entry of `lines`."""
    rng = random.Random(seed)
    out: dict[str, list[int]] = {"train": [], **{name: [] for name in fractions}}
    by_label: dict[Any, list[int]] = {}
    for i, label in enumerate(labels if labels is not None else [None] * len(lines)):
        by_label.setdefault(label, []).append(i)
    needed = len(fractions) + 1
    for label in sorted(by_label, key=str):
        pool = by_label[label]
        if len(pool) < needed:
            shown = ", ".join(str(lines[i]) for i in pool[:10])
            what = "examples" if labels is None else f"examples of label {label!r}"
            raise DataFileError(path, f"too few examples for a stratified split: {len(pool)} {what} (lines "
                                      f"{shown}); train, {', '.join(fractions)} need at least {needed} each, "
                                      "or give --validation-file and --test-file")
        rng.shuffle(pool)
        counts = [max(1, round(fraction * len(pool))) for fraction in fractions.values()]
        while sum(counts) > len(pool) - 1:  # train keeps at least one of every label
            counts[counts.index(max(counts))] -= 1
        taken = 0
        for name, n in zip(fractions, counts, strict=True):
            out[name].extend(pool[taken: taken + n])
            taken += n
        out["train"].extend(pool[taken:])
    return {name: sorted(index) for name, index in out.items()}


def file_record(path: Path, role: str, fmt: str, rows: int) -> dict[str, Any]:
    """What the manifest's `data.sources` says about one file."""
    return {"role": role, "path": str(path), "name": path.name, "format": fmt, "rows": rows,
            "sha256": sha256_file(path)}
