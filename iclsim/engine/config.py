"""Sweep files: TOML parsed into frozen, validated dataclasses.

A schema is a tree of frozen dataclasses whose fields carry ``metadata`` with a
``help`` text and optionally ``choices``, ``lo``/``hi`` bounds (inclusive) and
``min_len``.  :func:`parse` turns a TOML table into the schema, and every error —
unknown key, wrong type, value out of range — is a :class:`ConfigError` whose
one-line message names the dotted key and what is allowed.  :func:`apply_overrides`
applies ``key=value`` strings (the CLI's ``--set``), with values parsed as TOML
and type-checked against the same schema.

Keys and the config hash.  A result folder is keyed by :func:`config_hash`, a hash of
every key that can change a stored number.  A field declared ``spec(..., key=False)``
does not (presentation, the folder's name and place, how training is cut into
checkpointed chunks) and is left out of the hash: :func:`unkeyed_keys` lists them, and
``iclsim keys`` marks them.  A table whose class sets ``evaluation_only = True`` (the
``[eval]`` table) holds keys that change only the evaluation of trained parameters:
:func:`training_hash` leaves them out too, so the trained parameters are stored under a
key of their own and reused when only evaluation keys change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from typing import Any

__all__ = [
    "ConfigError",
    "FigureConfig",
    "spec",
    "parse",
    "load_toml",
    "apply_overrides",
    "to_dict",
    "config_hash",
    "training_hash",
    "unkeyed_keys",
    "evaluation_keys",
    "keyed_dict",
    "describe",
]


class ConfigError(ValueError):
    """A sweep file or override that does not fit the schema (one-line message)."""


def spec(default, help: str, *, choices=None, lo=None, hi=None, min_len=None, key=True):
    """A dataclass field with schema metadata (``default`` may be a tuple).

    ``key=False`` declares that the value changes no stored number: it is left out of
    :func:`config_hash` (a test must show that, see ``tests/test_config_keys.py``).
    """
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "min_len": min_len,
            "key": key}
    return dataclasses.field(default=default, metadata=meta)


def _type_hints(cls):
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        return f"list of {_type_name(inner)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _coerce_scalar(key, tp, value):
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - schema error
        raise TypeError(f"unsupported schema type {tp!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _check_meta(key, value, meta):
    items = value if isinstance(value, tuple) else (value,)
    choices, lo, hi = meta.get("choices"), meta.get("lo"), meta.get("hi")
    for item in items:
        if choices is not None and item not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{key}: {item!r} is not allowed; choose one of {allowed}")
        if lo is not None and item < lo:
            raise ConfigError(f"{key}: {item!r} is out of range; allowed {_range(lo, hi)}")
        if hi is not None and item > hi:
            raise ConfigError(f"{key}: {item!r} is out of range; allowed {_range(lo, hi)}")
    min_len = meta.get("min_len")
    if min_len is not None and isinstance(value, tuple) and len(value) < min_len:
        raise ConfigError(f"{key}: needs at least {min_len} value(s), got {len(value)}")


def _range(lo, hi):
    return f"[{lo}, {hi}]" if hi is not None else f">= {lo}"


def _coerce(key, tp, value, meta):
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            value = [value]  # a scalar is a one-element list
        out = tuple(_coerce_scalar(f"{key}[{i}]", inner, v) for i, v in enumerate(value))
    elif origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(key, arg, value, meta)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    elif _is_dataclass_type(tp):
        return parse(tp, value, prefix=key)
    else:
        out = _coerce_scalar(key, tp, value)
    _check_meta(key, out, meta)
    return out


def parse(cls, data: dict | None, *, prefix: str = ""):
    """Build the frozen dataclass ``cls`` from a (TOML) dict, validating every key."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'sweep'}: expected a table, got {type(data).__name__}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            allowed = ", ".join(fields)
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: unknown key; allowed keys here: {allowed}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(key, hints[name], data[name], dict(f.metadata))
        elif _is_dataclass_type(hints[name]):
            kwargs[name] = parse(hints[name], {}, prefix=key)
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or 'sweep'}: {exc}") from None
    return obj


def load_toml(path) -> dict:
    """Read a TOML file; a syntax error becomes a one-line :class:`ConfigError`."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give a sweep file, e.g. sweeps/quickstart.toml"
                          ) from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the sweep file (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text: byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _parse_value(key: str, text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if text[:1] in "[{\"'" or text[:1].isdigit() or text[:1] in "+-.":
            raise ConfigError(f"--set {key}: {text!r} is not valid TOML ({exc})") from None
        return text  # a bare word is a string


def apply_overrides(data: dict, overrides) -> dict:
    """Return a copy of the raw dict with ``a.b.c=value`` overrides applied (values as TOML)."""
    data = json.loads(json.dumps(data))
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=500")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a table")
        node[parts[-1]] = _parse_value(key.strip(), text.strip())
    return data


def to_dict(obj) -> dict:
    """The resolved config as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def unkeyed_keys(cls, prefix: str = "") -> tuple[str, ...]:
    """Dotted names of the keys of schema ``cls`` declared ``key=False`` (not in the hash)."""
    hints = _type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if _is_dataclass_type(hints[f.name]):
            out += unkeyed_keys(hints[f.name], key)
        elif not f.metadata.get("key", True):
            out.append(key)
    return tuple(out)


def evaluation_keys(cls, prefix: str = "") -> tuple[str, ...]:
    """Dotted names of the keys of schema ``cls`` that change only the evaluation of
    trained parameters (the fields of tables with ``evaluation_only = True``)."""
    hints = _type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            if getattr(tp, "evaluation_only", False):
                out += [f"{key}.{g.name}" for g in dataclasses.fields(tp)]
            else:
                out += evaluation_keys(tp, key)
    return tuple(out)


def _drop(data: dict, dotted) -> dict:
    data = json.loads(json.dumps(data))
    for name in dotted:
        *parents, last = name.split(".")
        node = data
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return data


def keyed_dict(obj, *, training: bool = False, cls=None) -> dict:
    """The resolved config ``obj`` (a schema instance, or its :func:`to_dict` form with
    ``cls`` given) without its ``key=False`` keys and, with ``training=True``, without its
    evaluation keys: exactly what :func:`config_hash` (:func:`training_hash`) hashes."""
    cls = type(obj) if cls is None else cls
    data = obj if isinstance(obj, dict) else to_dict(obj)
    dropped = unkeyed_keys(cls) + (evaluation_keys(cls) if training else ())
    return _drop(data, dropped)


def _hash(data: dict) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def config_hash(obj, *, exclude=("output_dir",)) -> str:
    """Stable 12-hex-digit hash of the resolved config: every key except those declared
    ``key=False`` (:func:`unkeyed_keys`) and the top-level fields in ``exclude``."""
    data = {k: v for k, v in keyed_dict(obj).items() if k not in exclude}
    return _hash(data)


def training_hash(obj) -> str:
    """Stable 12-hex-digit hash of what training reads: :func:`config_hash`'s keys minus the
    evaluation keys (:func:`evaluation_keys`).  The trained parameters are stored under it."""
    return _hash({k: v for k, v in keyed_dict(obj, training=True).items() if k != "output_dir"})


def toml_value(value) -> str:
    """A default as it is written in a sweep file (``[1, 2]``, ``"x"``, ``true``; None: unset)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return None


def describe_markdown(cls, prefix: str = "") -> list[str]:
    """The key tables of ``docs/sweeps.md``: one markdown table per TOML table."""
    hints = _type_hints(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            nested.append((key, tp))
            continue
        meta = f.metadata
        allowed = "/".join(map(str, meta["choices"])) if meta.get("choices") else (
            _range(meta["lo"], meta.get("hi")) if meta.get("lo") is not None else "")
        note = "" if meta.get("key", True) else " (not in the config hash)"
        rows.append(f"| `{key}` | {_type_name(tp)} | `{toml_value(_default(f))}` | {allowed} | "
                    f"{meta.get('help', '')}{note} |")
    out = []
    if rows:
        if prefix:
            out += [f"**`[{prefix}]`**", ""]
        out += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|", *rows, ""]
    for key, tp in nested:
        out += describe_markdown(tp, key)
    return out


def describe(cls, prefix: str = "") -> list[str]:
    """One line per key: ``key (type, default): help`` — for ``--help`` texts and docs."""
    lines = []
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            lines.append(f"[{key}]")
            lines.extend(describe(tp, key))
            continue
        meta = f.metadata
        extra = []
        if meta.get("choices"):
            extra.append("one of " + "/".join(map(str, meta["choices"])))
        if meta.get("lo") is not None:
            extra.append(_range(meta["lo"], meta.get("hi")))
        if not meta.get("key", True):
            extra.append("not in the config hash")
        bits = ", ".join([_type_name(tp), f"default {toml_value(_default(f))}", *extra])
        lines.append(f"  {key} ({bits}): {meta.get('help', '')}")
    return lines


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def replace(obj, **changes) -> Any:
    return dataclasses.replace(obj, **changes)


@dataclasses.dataclass(frozen=True)
class FigureConfig:
    """The ``[figures]`` table of every sweep file."""

    formats: tuple[str, ...] = spec(("png", "pdf"), "figure formats", choices=("png", "pdf", "svg"),
                                    key=False)


# ----------------------------------------------------------------- engine-owned common fields
# A setting's schema builds on these (dataclass inheritance): it redeclares a field only to
# change its default or help text, and adds its own fields (spectrum, model, …).


@dataclasses.dataclass(frozen=True)
class CommonTrain:
    """``[train]`` fields every setting has."""

    steps: int = spec(2000, "optimizer steps per run", lo=1, hi=10_000_000)
    chunk_steps: int = spec(500, "steps per checkpointed chunk", lo=1, key=False)
    schedule: str = spec("cosine", "learning-rate schedule", choices=("cosine", "constant"))
    final_lr_fraction: float = spec(0.01, "cosine decays to this fraction", lo=0.0, hi=1.0)
    loss_every: int = spec(10, "store the loss curve averaged over windows of this many steps",
                           lo=1)
    max_group_runs: int = spec(0, "split a static shape into groups of at most this many runs "
                               "(0: no limit)", lo=0)


@dataclasses.dataclass(frozen=True)
class CommonAxes:
    """``[axes]`` fields every setting has: the engine's grid axes besides the scale."""

    seeds: int = spec(2, "seeds per grid point", lo=1, hi=100_000)
    learning_rate: tuple[float, ...] = spec((0.01,), "learning rates", lo=1e-12, min_len=1)
    init_scale: tuple[float, ...] = spec((0.1,), "init scales", lo=0.0, min_len=1)
    n_context: tuple[int, ...] = spec((20,), "context lengths N (each N compiles once)", lo=1,
                                      hi=100_000, min_len=1)

    def __post_init__(self):
        check_distinct(self)


def check_distinct(table, prefix: str = "axes") -> None:
    """Every list field of ``table`` (an axes table) holds distinct values (one line naming
    the key otherwise): a repeated value would be a grid axis with duplicate coordinates."""
    for f in dataclasses.fields(table):
        values = getattr(table, f.name)
        if isinstance(values, tuple) and len(set(values)) != len(values):
            raise ConfigError(f"{prefix}.{f.name}: values must be distinct, got {list(values)}")


@dataclasses.dataclass(frozen=True)
class CommonEval:
    """``[eval]`` fields every setting has.  The whole table is evaluation-only: training
    never reads it (:func:`training_hash`)."""

    evaluation_only: typing.ClassVar[bool] = True

    n_prompts: int = spec(16384, "held-out prompts per run and noise level", lo=2,
                          hi=1_000_000_000)
    batch: int = spec(2048, "prompts per evaluation batch", lo=1, hi=1_000_000)


@dataclasses.dataclass(frozen=True)
class CommonSweep:
    """Top-level fields every sweep file has."""

    name: str = spec("sweep", "sweep name (results go to <output_dir>/<name>-<config hash>/"
                     "<code hash>/)", key=False)
    setting: str = spec("linear", "which setting")
    description: str = spec("", "free text, copied into the result", key=False)
    output_dir: str = spec("results", "root folder of the results", key=False)
    seed: int = spec(0, "root PRNG seed", lo=0)
    precision: str = spec("float32", "matrix products: float32 (full precision, what the oracle "
                          "comparisons need) or fast (the backend default: TF32/bfloat16 passes "
                          "on GPUs/TPUs; the same on CPUs)", choices=("float32", "fast"))
    figures: FigureConfig = FigureConfig()
