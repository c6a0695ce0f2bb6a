"""The trainer's typed configuration, its built-in presets, and how overrides are read.

Every setting the trainer reads lives in `TrainConfig`; an unknown key or a wrong type is an
error before anything runs. This module is pure (no torch) so the CLI can validate a sweep of
thousands of rows without importing the trainer's heavy dependencies.

    cfg = resolve_config("mhc", ["mhc_h_res_proj='orthostochastic'", "seed=1338"])
"""

from __future__ import annotations

import ast
import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NSTriple = tuple[float, float, float]

# The Newton-Schulz coefficient schedule that reference configs name as NS_COEFFS; offered to
# every config file and override as a predefined constant so the reference sweep rows
# (`ns_coeffs=NS_COEFFS ns_steps=len(NS_COEFFS)`) validate without a config file defining it.
NS_COEFFS_SCHEDULE: tuple[NSTriple, ...] = (
    (7.2086, -15.5131, 9.0178),
    (3.9623, -2.5813, 0.4542),
    (3.9466, -2.5765, 0.4544),
    (3.8991, -2.5671, 0.4566),
    (3.7186, -2.5308, 0.4653),
    (3.1390, -2.3073, 0.4733),
    (2.1715, -1.5246, 0.3885),
    (1.8648, -1.2224, 0.3577),
)
PREDEFINED_NAMES: dict[str, Any] = {"NS_COEFFS": NS_COEFFS_SCHEDULE}


class ConfigError(ValueError):
    """A bad config value, file or override. `file`/`line` locate it when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class TrainConfig(BaseModel):
    """Every knob of the bundled trainer. Field comments say what each one does."""

    # strict: a string is never silently read as a bool or a number (postmortem: wandb_log=false)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)

    # --- I/O ---
    out_dir: str = "out"  # run directory; its last path component is the run_id
    dataset: str = "fineweb10B"  # name recorded in manifests; data comes from data_dir
    data_dir: str | None = None  # folder with fineweb_train_*.bin / fineweb_val_*.bin
    resume: bool = False  # continue from out_dir/ckpt.pt when it exists
    init_from: str = "scratch"  # nanoGPT's: 'scratch', or 'resume' (= resume=True); 'gpt2*' is refused
    always_save_checkpoint: bool = True  # nanoGPT's: False saves ckpt.pt only when val improves
    heartbeat_interval_s: float = Field(10.0, gt=0, le=30)  # heartbeat.json refresh period
    # --- evaluation and logging ---
    eval_interval: int = Field(500, gt=0)  # iterations between evals (and checkpoints)
    log_interval: int = Field(10, gt=0)  # iterations between progress lines / metrics rows
    eval_iters: int = Field(100, gt=0)  # eval batches per split at each eval
    # sequences per eval batch, total over all processes, whatever batch_size is. With eval_iters it
    # fixes the eval set: the first eval_iters * eval_batch_size windows of block_size tokens of the
    # val (and train) shards, the same for every seed, batch split and world size.
    eval_batch_size: int = Field(32, gt=0)
    eval_only: bool = False  # nanoGPT's: evaluate once (the checkpoint when resuming), then stop
    # --- length and batch ---
    max_iters: int = Field(5000, gt=0)  # optimizer steps in the run
    batch_size: int = Field(32, gt=0)  # sequences per micro-step (per process)
    block_size: int = Field(1024, gt=0)  # context length in tokens
    gradient_accumulation_steps: int = Field(4, gt=0)  # micro-steps per optimizer step (total over ranks)
    # --- model ---
    n_layer: int = Field(6, gt=0)
    n_head: int = Field(6, gt=0)
    n_embd: int = Field(288, gt=0)
    vocab_size: int = Field(50304, gt=0)  # GPT-2's 50257 padded to a multiple of 64
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = False  # biases in Linear and LayerNorm
    # --- optimizer (AdamW) and schedule ---
    learning_rate: float = Field(6e-4, gt=0)  # peak lr after warmup
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)  # max global grad norm; 0 disables clipping
    warmup_iters: int = Field(200, ge=0)  # linear warmup steps
    lr_decay_iters: int = Field(5000, gt=0)  # cosine decay ends here, then min_lr
    min_lr: float = Field(6e-5, ge=0)
    decay_lr: bool = True  # nanoGPT's: False trains at learning_rate throughout (no warmup, no decay)
    seed: int = 1337
    # --- hyper-connections (HC, arXiv 2409.19606) ---
    hc_num_streams: int = Field(1, ge=1)  # copies of the residual stream
    hc_num_fracs: int = Field(1, ge=1)  # frac-connections; only 1 is implemented
    hc_disable: bool = True  # True: plain residual
    hc_static_only: bool = False  # drop the input-dependent (dynamic) part of the HC weights
    hc_dynamic_norm: Literal["layer", "rms"] = "layer"  # HC's norm before its dynamic branch (paper: LayerNorm)
    # c_proj init std with n streams: GPT-2's 0.02 / sqrt(2 n_layer), divided by sqrt(n) (HC paper) or not
    hc_out_proj_init: Literal["sqrt_n", "gpt2"] = "sqrt_n"
    # --- manifold-constrained HC (mHC, arXiv 2512.24880) ---
    mhc: bool = False  # project H_res onto doubly stochastic matrices
    sinkhorn_iters: int = Field(20, gt=0)  # Sinkhorn-Knopp iterations (paper: 20)
    sinkhorn_tau: float = Field(1.0, gt=0)  # temperature of exp(logits / tau); paper: 1 (reference: 0.05)
    mhc_h_res_proj: Literal["sinkhorn", "orthostochastic"] = "sinkhorn"
    ns_steps: int = Field(5, gt=0)  # Newton-Schulz steps for the orthostochastic map
    ns_eps: float = Field(1e-7, gt=0)  # added to the norm before Newton-Schulz
    ns_coeffs: NSTriple | tuple[NSTriple, ...] = (3.0, -3.2, 1.2)  # one (a,b,c) or one per step
    ns_polish_steps: int = Field(3, ge=0)  # cubic Newton-Schulz steps after those, onto the manifold
    mhc_h_res_balance: bool = True  # finish either projection: sums exact, entries >= 0 (paper: no)
    mhc_residual_identity_mix: bool = False  # H_res = (1-a) I + a S with a learned a
    mhc_residual_alpha: float = Field(0.01, gt=0, lt=1)  # initial a = sigmoid(logit) of the identity mix
    # --- residual-map diagnostics (logged at each eval for HC/mHC, see diagnostics.py) ---
    diag_batch_size: int = Field(4, ge=1)  # sequences of the fixed val batch the maps are measured on
    # --- value residual ---
    v_residual: bool = False  # mix the first layer's values into every layer's values
    v_residual_constrained: bool = False  # softmax-normalized (convex) mixing weights
    v_residual_lamb_lr: float = Field(1e-2, gt=0)  # learning rate of the mixing weights
    v_residual_init: float = Field(0.5, gt=0, lt=1)  # initial weight of layer 1's values (ResFormer: 0.5)
    # --- numerics and speed ---
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"  # autocast dtype on CUDA
    device: str | None = None  # cpu | cuda | cuda:N | mps; None picks cuda > mps > cpu
    compile_model: bool = False  # torch.compile (falls back to eager if compilation fails)
    backend: Literal["nccl", "gloo"] = "nccl"  # DDP process-group backend
    # --- Weights & Biases (off unless asked for) ---
    wandb_log: bool = False
    wandb_project: str = "sweepctl"
    wandb_run_name: str | None = None  # defaults to the run_id
    wandb_group: str | None = None
    wandb_log_layer_stats: bool = False  # per-layer activation statistics at each eval
    wandb_log_layer_cosine: bool = False  # per-layer cosine(input, output) at each eval
    wandb_log_amax: bool = False  # the mHC composite gain at each eval

    @field_validator("device")
    @classmethod
    def _device_known(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"device must be cpu, mps, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("init_from")
    @classmethod
    def _init_from_known(cls, v: str) -> str:
        if v.startswith("gpt2"):
            raise ValueError(
                f"init_from={v!r} would load OpenAI's GPT-2 weights from the Hugging Face Hub, which sweepctl "
                "does not do (pods train offline, and every variant must start from the same random init); "
                "use init_from='scratch', or init_from='resume' to continue out_dir/ckpt.pt")
        if v not in ("scratch", "resume"):
            raise ValueError(f"init_from must be 'scratch' or 'resume', got {v!r}")
        return v

    @field_validator("ns_coeffs", mode="before")
    @classmethod
    def _coeffs_as_tuples(cls, v: Any) -> Any:
        # TOML and JSON have no tuples; accept their lists for this one tuple-typed field.
        if isinstance(v, list):
            return tuple(tuple(x) if isinstance(x, list) else x for x in v)
        return v

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainConfig:
        problems: list[str] = []
        if self.n_embd % self.n_head:
            problems.append(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.min_lr > self.learning_rate:
            problems.append(f"min_lr ({self.min_lr}) must be <= learning_rate ({self.learning_rate})")
        if self.warmup_iters > self.lr_decay_iters:
            problems.append(
                f"warmup_iters ({self.warmup_iters}) must be <= lr_decay_iters ({self.lr_decay_iters})"
            )
        if self.hc_num_fracs != 1:
            problems.append("hc_num_fracs > 1 (frac-connections) is not implemented; use 1")
        if self.hc_disable and self.mhc:
            problems.append("mhc=True needs hc_disable=False (mHC is a hyper-connection variant)")
        if self.hc_disable and self.hc_num_streams > 1:
            problems.append(f"hc_num_streams={self.hc_num_streams} has no effect with hc_disable=True")
        if self.v_residual_constrained and not self.v_residual:
            problems.append("v_residual_constrained=True needs v_residual=True")
        if self.mhc_residual_identity_mix and not self.mhc:
            problems.append("mhc_residual_identity_mix=True needs mhc=True")
        schedule = self.ns_schedule
        if len(schedule) > 1 and len(schedule) != self.ns_steps:
            problems.append(
                f"ns_coeffs has {len(schedule)} per-step triples but ns_steps={self.ns_steps};"
                " set ns_steps=len(NS_COEFFS)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def ns_schedule(self) -> tuple[NSTriple, ...]:
        """The Newton-Schulz coefficients as one triple per step (a single triple repeats)."""
        c = self.ns_coeffs
        if c and isinstance(c[0], (int, float)):
            return (c,) * self.ns_steps  # type: ignore[return-value]
        return c  # type: ignore[return-value]

    @property
    def run_id(self) -> str:
        return Path(self.out_dir).name

    @property
    def variant(self) -> str:
        """A short name of the residual variant, for labels."""
        parts = []
        if self.v_residual:
            parts.append("cvres" if self.v_residual_constrained else "vres")
        if self.mhc:
            parts.append("mhc")
        elif not self.hc_disable:
            parts.append("hc")
        return "_".join(parts) or "base"

    @property
    def tokens_per_iter(self) -> int:
        return self.gradient_accumulation_steps * self.batch_size * self.block_size

    @property
    def wants_resume(self) -> bool:
        """resume=True or nanoGPT's init_from='resume': continue out_dir/ckpt.pt when it exists."""
        return self.resume or self.init_from == "resume"

    @property
    def eval_windows(self) -> int:
        """Windows of block_size tokens scored per split at each eval (see eval_batch_size)."""
        return self.eval_iters * self.eval_batch_size


FIELD_NAMES: tuple[str, ...] = tuple(TrainConfig.model_fields)
# nanoGPT's train.py names for our settings, so its config files and `--key=value` commands run
# unchanged; a value given under the alias is stored under our name.
NANOGPT_ALIASES: dict[str, str] = {"compile": "compile_model"}


def canonical_key(name: str) -> str:
    """Our name for a setting given under nanoGPT's name (`compile`), else the name itself."""
    return NANOGPT_ALIASES.get(name, name)


_FIELD_SET = frozenset(FIELD_NAMES)  # `TrainConfig.model_fields` is a descriptor call, too slow per override


# --------------------------------------------------------------------------- presets

# Presets of one depth differ only in the residual stream (tests/test_train_presets.py): the same
# tokens per iteration, iterations, LR schedule, eval cadence and eval set, so that a difference in
# loss is the variant's. The 48-layer ones score 100 x 16 eval windows (not 32): evals cost what
# they cost before the eval set was fixed.
_BASE_6L: dict[str, Any] = dict(
    n_layer=6, n_head=6, n_embd=288, block_size=1024, batch_size=32, gradient_accumulation_steps=4,
    max_iters=5000, lr_decay_iters=5000, eval_interval=500, eval_iters=100, eval_batch_size=32, log_interval=10,
    learning_rate=6e-4, min_lr=6e-5, warmup_iters=200, weight_decay=0.1, dropout=0.0, bias=False,
    dtype="bfloat16",
)
# 48 layers, 150 wide: 16 x 4 x 1024 = 65,536 tokens per iteration for 10,000 iterations, every
# variant. (The public mHC reference ran its mHC models at batch 24 for 6666 iterations and the
# others at batch 16 for 10000: about the same tokens, but different steps and batch, so the variant
# was confounded with the schedule. examples/configs/mhc_48l_reference.py keeps its setting.)
_DEEP: dict[str, Any] = dict(
    n_layer=48, n_embd=150, n_head=6, batch_size=16, gradient_accumulation_steps=4, max_iters=10000,
    lr_decay_iters=10000, eval_batch_size=16,
)
_HC = dict(hc_disable=False, hc_num_streams=4)
_MHC = dict(_HC, mhc=True, sinkhorn_iters=20, mhc_h_res_proj="sinkhorn")
_VRES = dict(v_residual=True)
_CVRES = dict(v_residual=True, v_residual_constrained=True)
_VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "hc": _HC,
    "mhc": _MHC,
    "vres": _VRES,
    "vres_mhc": dict(_MHC, **_VRES),
    "cvres_mhc": dict(_MHC, **_CVRES),
}

PRESETS: dict[str, dict[str, Any]] = {}
for _name, _extra in _VARIANTS.items():
    PRESETS[_name] = {**_BASE_6L, **_extra}
    PRESETS[f"{_name}_48l"] = {**_BASE_6L, **_DEEP, **_extra}

PRESET_NOTES: dict[str, str] = {
    "base": "plain residual",
    "hc": "hyper-connections, 4 streams",
    "mhc": "mHC, 4 streams, Sinkhorn 20 iterations",
    "vres": "plain residual + value residual",
    "vres_mhc": "mHC + value residual",
    "cvres_mhc": "mHC + constrained (convex) value residual",
}


# --------------------------------------------------------------------------- reading values


@dataclass
class Namespace:
    """Names a config file defined (all of them, constants included) and where."""

    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


class _CodeNotAllowed(Exception):
    """Raised for an expression node that would need executing code."""

    def __init__(self, node: ast.AST, what: str):
        super().__init__(what)
        self.node = node
        self.what = what


_BOOL_WORDS = {"true": True, "false": False}
_NONE_WORDS = {"none", "null"}
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


def _eval_node(node: ast.AST, names: dict[str, Any], *, bare_words: bool) -> Any:
    """Evaluate a literal-only expression. Never calls anything but the builtin len.

    bare_words: `true`/`false`/`none` in any case are literals (override style).
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_eval_node(e, names, bare_words=bare_words) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        return {
            _eval_node(k, names, bare_words=bare_words): _eval_node(v, names, bare_words=bare_words)
            for k, v in zip(node.keys, node.values, strict=False)  # type: ignore[arg-type]
        }
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand, names, bare_words=bare_words)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise _CodeNotAllowed(node, "unary minus on a non-number")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS):
        a = _eval_node(node.left, names, bare_words=bare_words)
        b = _eval_node(node.right, names, bare_words=bare_words)
        nums = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        if not nums:
            raise _CodeNotAllowed(node, "arithmetic on non-numbers")
        if isinstance(node.op, ast.Pow) and abs(b) > 64:
            raise _CodeNotAllowed(node, "exponent too large")
        ops = {ast.Add: a.__add__, ast.Sub: a.__sub__, ast.Mult: a.__mul__, ast.Div: a.__truediv__,
               ast.FloorDiv: a.__floordiv__, ast.Mod: a.__mod__, ast.Pow: a.__pow__}
        result = ops[type(node.op)](b)
        if result is NotImplemented:
            result = {ast.Add: b.__radd__, ast.Sub: b.__rsub__, ast.Mult: b.__rmul__,
                      ast.Div: b.__rtruediv__, ast.FloorDiv: b.__rfloordiv__, ast.Mod: b.__rmod__,
                      ast.Pow: b.__rpow__}[type(node.op)](a)
        return result
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        if bare_words and node.id.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[node.id.lower()]
        if bare_words and node.id.lower() in _NONE_WORDS:
            return None
        raise NameError(node.id)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "len"
        and len(node.args) == 1
        and not node.keywords
        and isinstance(node.args[0], ast.Name)
    ):
        v = _eval_node(node.args[0], names, bare_words=bare_words)
        if not isinstance(v, (tuple, list, str, dict)):
            raise _CodeNotAllowed(node, f"len() of a {type(v).__name__}")
        return len(v)
    kind = {ast.Call: "a function call", ast.Attribute: "attribute access", ast.Subscript: "subscripting",
            ast.Lambda: "a lambda"}.get(type(node), type(node).__name__)
    raise _CodeNotAllowed(node, kind)


# Plain decimal literals, read as ast would read them, without ast (most values of a big sweep).
_INT_RE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))(?:[eE][+-]?[0-9]+)?")


def _plain_number(raw: str) -> int | float | None:
    if _INT_RE.fullmatch(raw):
        return int(raw)
    if _FLOAT_RE.fullmatch(raw):
        return float(raw)
    return None


@functools.cache
def _accepts_str(name: str) -> bool:
    ann = TrainConfig.model_fields[name].annotation
    if ann is str:
        return True
    origin = get_origin(ann)
    if origin is Literal:
        return all(isinstance(a, str) for a in get_args(ann))
    return any(a is str for a in get_args(ann))


def expected_type(name: str) -> str:
    """What a setting holds, in words, for messages: 'an integer', 'true or false', ..."""
    ann = TrainConfig.model_fields[name].annotation
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if ann in words:
        return words[ann]  # type: ignore[index]
    if get_origin(ann) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(ann))
    if any(get_origin(a) is tuple for a in get_args(ann)):
        return "a tuple of numbers"
    return str(ann)


def suggest(name: str, choices: tuple[str, ...] = FIELD_NAMES + tuple(NANOGPT_ALIASES)) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key_message(key: str) -> str:
    return f"unknown setting {key!r}{suggest(key)}"


def parse_override(word: str, names: dict[str, Any] | None = None) -> tuple[str, Any]:
    """`key=value` (or nanoGPT's `--key=value`) -> (key, python value), the key under our name.
    Raises ConfigError with a message (no location)."""
    if "=" not in word:
        raise ConfigError(f"override {word!r} is not key=value")
    key, raw = word.split("=", 1)
    key = canonical_key(key.strip().removeprefix("--"))
    if key not in _FIELD_SET:
        raise ConfigError(unknown_key_message(key))
    fast = _plain_number(raw)
    if fast is not None:
        return key, fast
    env = {**PREDEFINED_NAMES, **(names or {})}
    if raw.lower() in _BOOL_WORDS and raw not in env:
        return key, _BOOL_WORDS[raw.lower()]
    as_str = _accepts_str(key)
    try:
        tree = ast.parse(raw.strip(), mode="eval")
    except SyntaxError:
        if as_str and raw:
            return key, raw  # a path or a word with punctuation: the string itself
        raise ConfigError(f"{key}={raw!r}: not a Python literal") from None
    try:
        return key, _eval_node(tree.body, env, bare_words=True)
    except NameError as e:
        if as_str and not _has_code(tree.body):
            return key, raw.strip()  # a bare word (or words-with-dashes) for a string field is that string
        if isinstance(tree.body, ast.Name) and TrainConfig.model_fields[key].annotation in (int, float, bool):
            # batch_size=big: say what the setting holds; "quote strings" would point the wrong way
            raise ConfigError(f"{key}={raw}: {key} needs {expected_type(key)}; {e.args[0]!r} is neither that "
                              "nor a name defined in the config file") from None
        raise ConfigError(
            f"{key}={raw}: unknown name {e.args[0]!r} (quote strings; names must be defined in the config file)"
        ) from None
    except _CodeNotAllowed as e:
        if as_str and not _has_code(tree.body):
            return key, raw.strip()  # e.g. wandb_group=fineweb-sweep: text, not arithmetic
        raise ConfigError(
            f"{key}={raw}: {e.what} is not allowed in an override (values are literals; quote strings)"
        ) from None


def format_override(key: str, value: Any) -> str:
    """The canonical `key=value` word: Python literals (`wandb_log=False`, never `false`), and a
    string written bare when it reads back as itself (`out_dir=/mnt/x`), else quoted."""
    if isinstance(value, str):
        if _reads_back_bare(value) and key in _FIELD_SET and _accepts_str(key):
            return f"{key}={value}"
        try:
            if parse_override(f"{key}={value}") == (key, value):
                return f"{key}={value}"
        except ConfigError:
            pass
    return f"{key}={value!r}"


_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _reads_back_bare(value: str) -> bool:
    """True for strings parse_override gives back unchanged for a string setting, decided without
    parsing (a plan formats three per row): an absolute path (no expression starts with "/"), or
    a word of letters, digits, "_" and "-" (`run-00001-s1337`): a name or a difference of names
    that are not defined, unless the whole word is a literal word or a predefined name."""
    if value.startswith("/"):
        return True
    return (_WORD_RE.fullmatch(value) is not None and value.lower() not in _BOOL_WORDS
            and value.lower() not in _NONE_WORDS and value not in PREDEFINED_NAMES)


def _has_code(node: ast.AST) -> bool:
    return any(isinstance(n, (ast.Call, ast.Attribute, ast.Subscript, ast.Lambda, ast.NamedExpr,
                              ast.ListComp, ast.GeneratorExp, ast.DictComp, ast.SetComp, ast.Await))
               for n in ast.walk(node))


def read_config_file(path: Path) -> Namespace:
    """Read a nanoGPT-style Python config (as data, never executed) or a TOML file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", file=str(path))
    if path.suffix == ".toml":
        return _read_toml(path)
    text = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:
        raise ConfigError(f"syntax error: {e.msg}", file=str(path), line=e.lineno) from None
    ns = Namespace()
    env = dict(PREDEFINED_NAMES)
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            targets, value = [stmt.target], stmt.value
        elif isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            targets, value = stmt.targets, stmt.value
        else:
            kind = type(stmt).__name__.lower()
            raise ConfigError(
                f"only `name = literal` assignments are allowed in a config file, found {kind} (not executed)",
                file=str(path), line=stmt.lineno,
            )
        try:
            v = _eval_node(value, env, bare_words=False)
        except NameError as e:
            raise ConfigError(f"name {e.args[0]!r} is not defined earlier in this file",
                              file=str(path), line=stmt.lineno) from None
        except _CodeNotAllowed as e:
            raise ConfigError(f"{e.what} is not allowed in a config file (not executed)",
                              file=str(path), line=getattr(e.node, "lineno", stmt.lineno)) from None
        for t in targets:
            name = t.id  # type: ignore[attr-defined]
            key = canonical_key(name)
            if not name.isupper() and key not in TrainConfig.model_fields:
                raise ConfigError(unknown_key_message(name), file=str(path), line=stmt.lineno)
            env[name] = v  # later lines may use the name as written
            ns.values[key] = v
            ns.lines[key] = stmt.lineno
    return ns


def _read_toml(path: Path) -> Namespace:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(f"TOML: {e}", file=str(path), line=int(m.group(1)) if m else None) from None
    ns = Namespace()
    for name, v in data.items():
        line = _toml_line(text, name)
        key = canonical_key(name)
        if not name.isupper() and key not in TrainConfig.model_fields:
            raise ConfigError(unknown_key_message(name), file=str(path), line=line)
        ns.values[key] = v
        ns.lines[key] = line
    return ns


def _toml_line(text: str, key: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return i
    return None


def settings_of(ns: Namespace) -> dict[str, Any]:
    """The TrainConfig settings a config file sets (its UPPERCASE constants left out)."""
    return {k: v for k, v in ns.values.items() if k in TrainConfig.model_fields}


def build_config(values: dict[str, Any], *, file: str | None = None, lines: dict[str, int] | None = None
                 ) -> TrainConfig:
    """Validate merged settings; the first error is located at its key's line when known."""
    try:
        return TrainConfig(**values)
    except ValidationError as e:
        raise config_error_from(e, file=file, lines=lines or {}) from None


def config_error_from(e: ValidationError, *, file: str | None, lines: dict[str, int]) -> ConfigError:
    msgs = []
    line = None
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = str(err["loc"][0]) if err["loc"] else ""
        if line is None and key in lines:
            line = lines[key]
        got = err.get("input")
        text = err["msg"].removeprefix("Value error, ")
        if loc and err["type"] != "value_error":
            text = f"{loc}: {text} (got {got!r})"
        msgs.append(text)
    return ConfigError("; ".join(dict.fromkeys(msgs)), file=file, line=line)


def resolve_config(config: str, overrides: list[str] | tuple[str, ...] = (), *, base_dir: Path | None = None
                   ) -> TrainConfig:
    """The trainer's own entry: preset name or config file, then `key=value` overrides."""
    values: dict[str, Any] = {}
    names: dict[str, Any] = {}
    file = None
    if config in PRESETS:
        values.update(PRESETS[config])
    else:
        path = Path(config)
        if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
        if not path.exists():
            raise ConfigError(
                f"config {config!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file"
            )
        ns = read_config_file(path)
        values.update(settings_of(ns))
        names = ns.values
        file = str(path)
    for word in overrides:
        k, v = parse_override(word, names)
        values[k] = v
    return build_config(values, file=file)
