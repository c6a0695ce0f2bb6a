"""Sweep CSV -> validated `RunSpec`s. Every problem is reported at once, as `CSVFILE:LINE: message`.

    run_id,config,seed,overrides,notes[,gpus][,priority]
    fineweb10B-mhc-6l-s1337,mhc,1337,"mhc_h_res_proj='orthostochastic' wandb_log=false",

`config` is a preset name, or a nanoGPT-style config file (relative to the CSV's folder, else the
working directory) read as data, or a TOML file. `overrides` are shell-quoted `key=value` words
with Python-literal values. Nothing here executes user text or touches the disk beyond reading.
"""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from sweepctl.errors import SpecError
from sweepctl.train.config import (
    PRESETS,
    ConfigError,
    Namespace,
    TrainConfig,
    build_config,
    format_override,
    parse_override,
    read_config_file,
    settings_of,
    suggest,
)

REQUIRED_COLUMNS = ("run_id", "config", "seed")
OPTIONAL_COLUMNS = ("overrides", "notes", "gpus", "priority")
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RUN_ID_MAX = 128
# Set by sweepctl itself for every run (the run directory contract); a row may not change them.
RESERVED_KEYS = {
    "out_dir": "the run directory is <out_root>/<run_id>; choose --out-root instead",
    "seed": "use the seed column",
    "resume": "sweepctl resumes stale runs itself",
}


class RunSpec(BaseModel):
    """One validated CSV row. `config` is its effective trainer config before launch settings."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    run_id: str
    line: int  # CSV line of the row (header is line 1)
    row_index: int  # 0-based position among the data rows, in file order
    config_ref: str  # the config column as written
    config_path: Path | None  # the config file it names; None for a preset
    seed: int
    overrides: tuple[str, ...]  # canonical `key=value` words, names from the config file inlined
    override_words: tuple[str, ...] = ()  # the overrides as written in the CSV
    notes: str = ""
    gpus: int = 1
    priority: int = 0  # dynamic schedule: higher is claimed first, then longest first
    config: TrainConfig


class Sweep(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    csv_path: Path
    runs: tuple[RunSpec, ...]
    warnings: tuple[str, ...] = ()

    @property
    def config_files(self) -> list[Path]:
        return sorted({r.config_path for r in self.runs if r.config_path is not None})


def sweep_name_of(csv_path: Path) -> str:
    return csv_path.stem


def read_sweep(csv_path: Path, *, name: str | None = None) -> Sweep:
    """Parse and validate a sweep CSV; raise SpecError listing every problem."""
    loader = _ConfigLoader(csv_path.parent)
    problems: list[tuple[int, str]] = []
    runs: list[RunSpec] = []
    shown = str(csv_path)
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise SpecError([f"{shown}:1: file not found"], hint="check the CSV path") from None
    except UnicodeDecodeError as e:
        raise SpecError([f"{shown}:1: not UTF-8 text ({e.reason})"]) from None

    rows = _records(text, shown, problems)
    if not rows or (problems and len(rows) == 1):
        if not problems:
            problems.append((1, "empty file: expected a header `run_id,config,seed,overrides,notes`"))
        raise SpecError(_format(shown, problems))
    _header_line, header = rows[0]
    columns = [c.strip() for c in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    for c in missing:
        problems.append((1, f"missing column {c!r} (header must include {', '.join(REQUIRED_COLUMNS)})"))
    for c in unknown:
        problems.append((1, f"unknown column {c!r}{suggest(c, REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}"))
    dupes = {c for c in columns if columns.count(c) > 1}
    for c in sorted(dupes):
        problems.append((1, f"column {c!r} appears more than once"))
    if missing or unknown or dupes:
        raise SpecError(_format(shown, problems))
    data = rows[1:]
    if not data:
        raise SpecError(_format(shown, [(1, "no rows: the file has a header and nothing else")]))

    seen: dict[str, int] = {}
    for row_index, (line, values) in enumerate(data):
        if len(values) > len(columns):
            problems.append((line, f"{len(values)} fields but the header has {len(columns)} (quote fields with commas)"))
            continue
        cells = dict(zip(columns, (v.strip() for v in values), strict=False))
        run, errs = _read_row(cells, line, row_index, loader)
        problems.extend((line, e) for e in errs)
        run_id = cells.get("run_id", "")
        if run_id and run_id in seen:
            problems.append((line, f"duplicate run_id {run_id!r} (first at line {seen[run_id]})"))
            continue
        seen.setdefault(run_id, line)
        if run is not None:
            runs.append(run)
    if problems:
        raise SpecError(_format(shown, problems))
    return Sweep(name=name or sweep_name_of(csv_path), csv_path=csv_path, runs=tuple(runs),
                 warnings=tuple(_duplicate_config_warnings(shown, runs)))


def _records(text: str, shown: str, problems: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """(first line, fields) per non-blank record; multi-line quoted fields keep their first line."""
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    out: list[tuple[int, list[str]]] = []
    prev_end = 0
    try:
        for fields in reader:
            start = prev_end + 1
            prev_end = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue  # blank lines (trailing ones included) are not rows
            out.append((start, fields))
    except csv.Error as e:
        problems.append((prev_end + 1, f"malformed CSV: {e} (unbalanced quote?)"))
    return out


def _format(shown: str, problems: list[tuple[int, str]]) -> list[str]:
    return [f"{shown}:{line}: {msg}" for line, msg in sorted(problems, key=lambda p: p[0])]


class _ConfigLoader:
    """Reads each config file once (a 10,000-row sweep names a handful)."""

    def __init__(self, csv_dir: Path):
        self.csv_dir = csv_dir
        self.cache: dict[Path, Namespace | ConfigError] = {}

    def locate(self, ref: str) -> Path | None:
        p = Path(ref).expanduser()
        if p.is_absolute():
            return p if p.exists() else None
        for base in (self.csv_dir, Path.cwd()):
            if (base / p).exists():
                return (base / p).resolve()
        return None

    def load(self, path: Path) -> Namespace:
        if path not in self.cache:
            try:
                self.cache[path] = read_config_file(path)
            except ConfigError as e:
                self.cache[path] = e
        got = self.cache[path]
        if isinstance(got, ConfigError):
            raise got
        return got


def _read_row(cells: dict[str, str], line: int, row_index: int, loader: _ConfigLoader
              ) -> tuple[RunSpec | None, list[str]]:
    errs: list[str] = []
    run_id = cells.get("run_id", "")
    if not run_id:
        errs.append("empty run_id")
    elif len(run_id) > RUN_ID_MAX:
        errs.append(f"run_id is {len(run_id)} characters; at most {RUN_ID_MAX}")
    elif not RUN_ID_RE.fullmatch(run_id):
        errs.append(f"run_id {run_id!r} is not a safe directory name (letters, digits, '.', '_', '-'; "
                    "starts with a letter or digit)")

    seed: int | None = None
    raw_seed = cells.get("seed", "")
    if raw_seed:
        try:
            seed = int(raw_seed)
        except ValueError:
            errs.append(f"seed {raw_seed!r} is not an integer")

    gpus = 1
    raw_gpus = cells.get("gpus", "")
    if raw_gpus:
        if raw_gpus.isdigit() and int(raw_gpus) >= 1:
            gpus = int(raw_gpus)
        else:
            errs.append(f"gpus {raw_gpus!r} is not a positive integer")

    priority = 0
    raw_priority = cells.get("priority", "").strip()
    if raw_priority:
        try:
            priority = int(raw_priority)
        except ValueError:
            errs.append(f"priority {raw_priority!r} is not an integer (higher is claimed first)")

    ref = cells.get("config", "")
    values: dict[str, Any] = {}
    names: dict[str, Any] = {}
    lines: dict[str, int] = {}
    config_path: Path | None = None
    config_ok = True
    if not ref:
        errs.append(f"empty config (a preset: {', '.join(PRESETS)}; or a config file path)")
        config_ok = False
    elif ref in PRESETS:
        values.update(PRESETS[ref])
    else:
        config_path = loader.locate(ref)
        if config_path is None:
            hint = suggest(ref, tuple(PRESETS)) if "/" not in ref and "." not in ref else ""
            errs.append(f"config {ref!r} is neither a preset nor a file (looked in the CSV's folder and the "
                        f"working directory){hint}")
            config_ok = False
        else:
            try:
                ns = loader.load(config_path)
                values.update(settings_of(ns))
                names, lines = ns.values, ns.lines
            except ConfigError as e:
                errs.append(f"config {ref!r}: {e}")
                config_ok = False

    canonical: list[str] = []
    try:
        words = shlex.split(cells.get("overrides", ""))
    except ValueError as e:
        errs.append(f"overrides: {e} (quote values as in the shell)")
        words = []
    for word in words:
        try:
            key, value = parse_override(word, names)
        except ConfigError as e:
            errs.append(f"overrides: {e}")
            continue
        if key in RESERVED_KEYS:
            errs.append(f"override {key!r} is not allowed here: {RESERVED_KEYS[key]}")
            continue
        values[key] = value
        canonical.append(format_override(key, value))

    if seed is not None:
        values["seed"] = seed
    if errs or not config_ok:
        return None, errs
    try:
        config = build_config(values, lines=lines)
    except ConfigError as e:
        where = f" ({config_path}:{e.line})" if config_path and e.line else ""
        return None, [f"{e.message}{where}"]
    return RunSpec(run_id=run_id, line=line, row_index=row_index, config_ref=ref, config_path=config_path,
                   seed=config.seed, overrides=tuple(canonical), override_words=tuple(words), notes=cells.get("notes", ""), gpus=gpus,
                   priority=priority, config=config), []


def _duplicate_config_warnings(shown: str, runs: list[RunSpec]) -> list[str]:
    """Two run_ids with identical effective configs (seed included) usually mean an override
    did not take effect; seed replicates differ in seed and are not warned about."""
    first: dict[str, RunSpec] = {}
    out = []
    for run in runs:
        key = run.config.model_dump_json(exclude={"out_dir", "wandb_run_name"})
        if key in first:
            other = first[key]
            out.append(f"{shown}:{run.line}: warning: {run.run_id!r} has the same effective config as "
                       f"{other.run_id!r} (line {other.line}); did an override not take effect?")
        else:
            first[key] = run
    return out
