"""Sweep CSV -> validated `RunSpec`s. Every problem is reported at once, as `CSVFILE:LINE: message`.

    run_id,config,seed,overrides,notes[,gpus][,priority]
    fineweb10B-mhc-6l-s1337,mhc,1337,"mhc_h_res_proj='orthostochastic' wandb_log=false",

`config` is a preset name, or a nanoGPT-style config file (relative to the CSV's folder, else the
working directory) read as data, or a TOML file. `overrides` are shell-quoted `key=value` words
with Python-literal values. Nothing here executes user text or touches the disk beyond reading.
"""

from __future__ import annotations

import csv
import operator
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from sweepctl.errors import SpecError
from sweepctl.train.config import (
    PRESETS,
    ConfigError,
    Namespace,
    TrainConfig,
    build_config,
    expected_type,
    format_override,
    parse_override,
    read_config_file,
    settings_of,
    suggest,
)
from sweepctl.train.contract import RUN_ID_MAX, RUN_ID_RE  # one rule for the CSV and every command

REQUIRED_COLUMNS = ("run_id", "config", "seed")
OPTIONAL_COLUMNS = ("overrides", "notes", "gpus", "priority")
# Bytes no command line can carry (NUL) or that rewrite what a terminal shows (other C0, DEL, C1).
# Tab and line breaks are whitespace to the override parser and the notes, so they stay allowed.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Environment variables whose value is a secret: a cell holding one would put it in plan.json.
SECRET_ENV_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)
SECRET_MIN_LEN = 6  # shorter values ("1", "true") match too much to mean anything
# Set by sweepctl itself for every run (the run directory contract); a row may not change them.
# Characters that make shlex.split differ from str.split.
_SHELL_SPECIAL = re.compile(r"[\"'\\]")
RESERVED_KEYS = {
    "out_dir": "the run directory is <out_root>/<run_id>; choose --out-root instead",
    "seed": "use the seed column",
    "resume": "sweepctl resumes stale runs itself",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One validated CSV row. `config` is its effective trainer config before launch settings.
    Built only by `read_sweep` from checked values (a plain slotted record: 10,000 of them are a
    big sweep, and nothing here is read back from outside)."""

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


@dataclass(frozen=True)
class Sweep:
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
    secrets = _secret_env()
    warnings: list[tuple[int, str]] = []
    configs = _Configs()
    for row_index, (line, values) in enumerate(data):
        if len(values) > len(columns):
            problems.append((line, f"{len(values)} fields but the header has {len(columns)} "
                                   "(quote fields with commas)"))
            continue
        cells = dict(zip(columns, map(str.strip, values), strict=False))
        problems.extend((line, e) for e in _control_characters(cells, shown))
        warnings.extend((line, w) for w in _secrets_in(cells, secrets))
        run, errs = _read_row(cells, line, row_index, loader, configs)
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
                 warnings=tuple(_format(shown, warnings) + _duplicate_config_warnings(shown, runs)))


def _control_characters(cells: dict[str, str], shown: str) -> list[str]:
    """One problem per cell holding a byte that cannot reach a command line (by position, not echoed)."""
    if CONTROL_RE.search("".join(cells.values())) is None:
        return []  # the common case, in one search instead of one per cell
    out = []
    for column, value in cells.items():
        found = CONTROL_RE.search(value)
        if found is None:
            continue
        char = found.group()
        if char == "\0":
            fix = f"remove NULs: tr -d '\\000' < {shlex.quote(shown)} > fixed.csv"
            what = "a NUL byte"
        else:
            fix, what = "delete it from the CSV", f"control character U+{ord(char):04X}"
        out.append(f"column {column!r} has {what} at character {found.start() + 1}: no command line can carry "
                   f"it; {fix}")
    return out


def _secret_env() -> list[tuple[str, str]]:
    """(name, value) of each environment variable that holds a secret, by name."""
    return sorted((k, v) for k, v in os.environ.items() if SECRET_ENV_NAME.search(k) and len(v) >= SECRET_MIN_LEN)


def _secrets_in(cells: dict[str, str], secrets: list[tuple[str, str]]) -> list[str]:
    """A warning (never the value) per cell that holds a secret environment variable's value."""
    if not secrets:
        return []
    out = []
    for column, value in cells.items():
        for name, secret in secrets:
            if secret in value:
                out.append(f"warning: column {column!r} holds the value of ${name}; plan.json and runner.json "
                           f"would keep it. Pass it through the environment instead of the CSV")
                break
    return out


def _records(text: str, shown: str, problems: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """(first line, fields) per non-blank record; multi-line quoted fields keep their first line."""
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    out: list[tuple[int, list[str]]] = []
    prev_end = 0
    try:
        for fields in reader:
            start = prev_end + 1
            prev_end = reader.line_num
            if not "".join(fields).strip():
                continue  # blank lines (trailing ones included) are not rows: every field is whitespace
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
        self.settings: dict[Path, dict[str, Any]] = {}  # one dict per file, shared by its rows (see _Configs)

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
        if path not in self.settings:
            self.settings[path] = settings_of(got)
        return got


def _read_row(cells: dict[str, str], line: int, row_index: int, loader: _ConfigLoader, configs: _Configs
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
    base: dict[str, Any] = {}  # the preset's or the config file's settings: one dict for all its rows
    values: dict[str, Any] = {}  # the row's own: overrides, then the seed
    names: dict[str, Any] = {}
    lines: dict[str, int] = {}
    config_path: Path | None = None
    config_ok = True
    if not ref:
        errs.append(f"empty config (a preset: {', '.join(PRESETS)}; or a config file path)")
        config_ok = False
    elif ref in PRESETS:
        base = PRESETS[ref]
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
                base = loader.settings[config_path]
                names, lines = ns.values, ns.lines
            except ConfigError as e:
                errs.append(f"config {ref!r}: {e}")
                config_ok = False

    canonical: list[str] = []
    text = cells.get("overrides", "")
    if not _SHELL_SPECIAL.search(text):
        words = text.split()  # what shlex.split gives for text without quotes or escapes, 20x faster
    else:
        try:
            words = shlex.split(text)
        except ValueError as e:
            errs.append(f"overrides: {e} (quote values as in the shell)")
            words = []
        errs.extend(_quoted_non_strings(text, words))
    first_word: dict[str, str] = {}
    for word in words:
        try:
            key, value = parse_override(word, names)
        except ConfigError as e:
            errs.append(f"overrides: {e}")
            continue
        if key in first_word:
            errs.append(f"overrides: {key} is set twice ({first_word[key]}, then {word}); keep one")
            continue
        first_word[key] = word
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
        config = configs.build(ref, base, values, lines)
    except ConfigError as e:
        where = f" ({config_path}:{e.line})" if config_path and e.line else ""
        return None, [f"{e.message}{where}"]
    return RunSpec(run_id=run_id, line=line, row_index=row_index, config_ref=ref, config_path=config_path,
                   seed=config.seed, overrides=tuple(canonical), override_words=tuple(words),
                   notes=cells.get("notes", ""), gpus=gpus, priority=priority, config=config), []


class _Configs:
    """Each row's TrainConfig, equal to what `build_config({**base, **values})` returns, without
    validating every field of every row: a 10,000-row sweep names a few presets or config files
    (`base`, one dict object each), and its rows differ in a few overrides and the seed (`values`).

    The first row of each (base, set of row keys) is validated whole and kept as the template. A
    later row with the same base object and the same row keys has the same inputs as the template
    except its row values: each is validated with pydantic's own validator for that field, the
    template's validated values stand for every other field, and the model's after-validators (the
    cross-field rules) run on the result. That is pydantic's order: fields one by one, then the
    model. It holds only while no field validator reads other fields and the model has no
    before- or wrap-validator: `_fast_path` checks this once and leaves the full validation
    alone otherwise. Any failure on the fast path is validated again in full, so every error
    message is pydantic's own."""

    def __init__(self) -> None:
        self.templates: dict[tuple[str, tuple[str, ...]], tuple[dict[str, Any], TrainConfig]] = {}
        self.fast = _fast_path()

    def build(self, ref: str, base: dict[str, Any], values: dict[str, Any], lines: dict[str, int]) -> TrainConfig:
        key = (ref, tuple(values))
        known = self.templates.get(key) if self.fast is not None else None
        if known is not None and known[0] is base:
            config = self._from_template(known[1], values)
            if config is not None:
                return config
        config = shared_fields_set(build_config({**base, **values}, lines=lines))
        self.templates.setdefault(key, (base, config))
        return config

    def _from_template(self, template: TrainConfig, values: dict[str, Any]) -> TrainConfig | None:
        assert self.fast is not None
        fields, after = self.fast
        try:
            config = with_settings(template, {k: fields[k](v) for k, v in values.items()})
            for check in after:
                config = check(config)
        except Exception:  # any failure is validated again in full, for pydantic's own message
            return None
        return config


def with_settings(config: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """`config.model_copy(update=changes)` for values already checked (by a field's validator, or
    sweepctl's own launch settings), without its three `copy.copy` calls: its set of set fields
    is shared as `shared_fields_set` shares it, and TrainConfig has no extras or private values."""
    new = TrainConfig.__new__(TrainConfig)
    values = config.__dict__.copy()
    values.update(changes)
    object.__setattr__(new, "__dict__", values)
    object.__setattr__(new, "__pydantic_fields_set__", _fields_set_with(config.__pydantic_fields_set__, changes))
    object.__setattr__(new, "__pydantic_extra__", config.__pydantic_extra__)
    object.__setattr__(new, "__pydantic_private__", config.__pydantic_private__)
    return new


# (id of a set of set fields, names added) -> (that set, the shared set with them): a plan adds
# the same launch settings to every row's config. The set is kept in the value so its id stays its.
_UNIONS: dict[tuple[int, tuple[str, ...]], tuple[set[str], set[str]]] = {}


def _fields_set_with(fields_set: set[str], names: dict[str, Any]) -> set[str]:
    """The shared set of set fields with `names` added (`fields_set` itself when it has them)."""
    key = (id(fields_set), tuple(names))
    known = _UNIONS.get(key)
    if known is not None and known[0] is fields_set:
        return known[1]
    if fields_set.issuperset(names):
        union = fields_set
    else:
        union = _FIELDS_SETS.setdefault(frozen := frozenset(fields_set.union(names)), set(frozen))
    _UNIONS[key] = (fields_set, union)
    return union


def _fast_path() -> tuple[dict[str, Callable[[Any], Any]], list[Callable[[Any], Any]]] | None:
    """(a validator per TrainConfig field, the model's after-validators) taken from the model's
    own core schema, or None when its shape allows no field-by-field validation (see _Configs)."""
    from pydantic_core import SchemaValidator

    schema: Any = TrainConfig.__pydantic_core_schema__
    after = []
    while schema.get("type") == "function-after":
        if schema["function"].get("type") != "no-info":
            return None
        after.insert(0, schema["function"]["function"])  # the innermost runs first
        schema = schema["schema"]
    if schema.get("type") != "model" or schema.get("schema", {}).get("type") != "model-fields":
        return None
    config = schema.get("config") or {}
    fields = {}
    for name, spec in schema["schema"]["fields"].items():
        if spec.get("type") != "model-field" or not _self_contained(spec["schema"]):
            return None
        fields[name] = SchemaValidator(spec["schema"], config).validate_python
    return fields, after


def _self_contained(schema: Any) -> bool:
    """No validator in a field's schema reads anything but its own input (no `info`: other fields),
    and no part refers to a definition elsewhere."""
    if isinstance(schema, dict):
        if schema.get("type") in ("definition-ref", "definitions"):
            return False
        function = schema.get("function")
        if isinstance(function, dict) and function.get("type") != "no-info":
            return False
        return all(_self_contained(v) for k, v in schema.items() if k not in ("function", "default", "metadata"))
    if isinstance(schema, (list, tuple)):
        return all(_self_contained(v) for v in schema)
    return True


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
_Model = TypeVar("_Model", bound=BaseModel)


def shared_fields_set(model: _Model) -> _Model:
    """Point a frozen model's set of explicitly set fields at one shared set per distinct set.
    pydantic keeps one per instance, and it outweighs the values: 2 KB of a TrainConfig's 4 KB,
    so 40 MB of a 20,000-row sweep. Frozen models never change it (model_copy copies it)."""
    key = frozenset(model.__pydantic_fields_set__)
    object.__setattr__(model, "__pydantic_fields_set__", _FIELDS_SETS.setdefault(key, set(key)))
    return model


def _quoted_non_strings(text: str, words: list[str]) -> list[str]:
    """`batch_size='32'`: the shell's quotes vanish and the trainer would get 32, but whoever quoted
    the value meant a string, which a number or boolean setting does not hold. Quotes around a
    value with spaces (`ns_coeffs='(1, 2, 3)'`) only protect the spaces and are fine."""
    lexer = shlex.shlex(text, posix=False)
    lexer.whitespace_split = True
    try:
        raw_words = list(lexer)
    except ValueError:
        return []  # unbalanced quotes are reported by shlex.split already
    if len(raw_words) != len(words):
        return []  # escapes the two lexers read differently: nothing to pair
    out = []
    for raw, word in zip(raw_words, words, strict=True):
        key, sep, value = raw.partition("=")
        key = key.strip()
        if (not sep or TrainConfig.model_fields.get(key) is None
                or TrainConfig.model_fields[key].annotation not in (int, float, bool) or len(value) < 2
                or value[0] not in "'\"" or value[-1] != value[0] or value[1] in "'\""
                or any(c.isspace() for c in value)):
            continue
        out.append(f"overrides: {raw} is quoted, so it is a string, but {key} needs {expected_type(key)}: "
                   f"write {word}")
    return out


def _duplicate_config_warnings(shown: str, runs: list[RunSpec]) -> list[str]:
    """Two run_ids with identical effective configs (seed included) usually mean an override
    did not take effect; seed replicates differ in seed and are not warned about."""
    first: dict[tuple[Any, ...], RunSpec] = {}
    out = []
    effective = operator.itemgetter(*(k for k in TrainConfig.model_fields if k not in ("out_dir", "wandb_run_name")))
    for run in runs:
        key = effective(run.config.__dict__)
        if key in first:
            other = first[key]
            out.append(f"{shown}:{run.line}: warning: {run.run_id!r} has the same effective config as "
                       f"{other.run_id!r} (line {other.line}); did an override not take effect?")
        else:
            first[key] = run
    return out
