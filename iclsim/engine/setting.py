"""The setting contract: what a setting declares, and everything the engine does with it.

A *setting* (``iclsim.linear.sweep.LINEAR``, ``iclsim.parity.sweep.PARITY``, …) is a
subclass of :class:`Setting` that declares everything it is: its kind (trained or
evaluated), its axes (the scale, the static and the tuning axes), its maths (data,
model, assessment, oracle), its metadata and its report (``summary``, ``figures``);
optional members have the defaults documented on :class:`Setting`, and the declaration
is checked once, when the setting is registered (:func:`check_setting`).  The engine
owns, for every setting alike:

* the grid: named run axes (``cfg.axes.<name>``; ``seed`` is ``range(cfg.axes.seeds)``),
  grouping by static shape, named per-run columns (:class:`Runs`, never a
  positional index), padding to equal group sizes;
* the eval key, loss windowing (``train.loss_every``), verdict storage (strings
  in the result, small integer codes on disk), the ``diverged``/``present`` flags;
* scattering per-run arrays onto the labelled grid and merging the oracle's
  variables on the same named axes (:func:`build_dataset`);
* the simulated best scale (:func:`best_scale`: each scale at its best-tuned learning rate
  and init scale by default, or pooled over them), used by ``iclsim show``, the figures and
  ``iclsim compare``;
* the registry the CLI discovers settings from (:func:`register`, :func:`get_setting`).
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

__all__ = [
    "Setting", "check_setting", "REQUIRED_MEMBERS", "Runs", "Group", "axis_values", "build_groups", "pad_group", "eval_key",
    "window_loss", "build_dataset", "describe_run", "best_scale", "register", "get_setting",
    "setting_names", "EVAL_KEY_SALT", "TUNING_AXES", "TUNING_WORDS", "tuning_word",
]

#: The evaluation PRNG key is ``fold_in(key(cfg.seed), EVAL_KEY_SALT)``: disjoint from the
#: training keys (``fold_in(key(cfg.seed), seed)`` for seed < EVAL_KEY_SALT).
EVAL_KEY_SALT = 1_000_003
#: The default ``Setting.tuning_axes``: the engine's common tuning axes (``cfg.axes`` of
#: :class:`iclsim.engine.config.CommonAxes`).  A setting declares its own.
TUNING_AXES = ("learning_rate", "init_scale")
#: The words that name each ``tuning`` of :func:`best_scale` in tables and figure footers.
TUNING_WORDS = {"best": "best-tuned (min over learning rate × init scale of the seed mean)",
                "pooled": "pooled (mean over seeds, learning rates and init scales)"}


class Setting:
    """The base class of every setting: what it declares, with documented defaults.

    A setting subclasses this and declares (see ``docs/engine.md``, checked once by
    :func:`check_setting` when it is registered or run):

    Required of every setting
        ``name`` (registry key, ``setting =`` of a sweep file); ``config_class`` (its
        schema: a frozen dataclass on the engine's common fields,
        :mod:`iclsim.engine.config`); ``kind`` (``"trained"``: the engine trains its runs;
        ``"evaluated"``: the engine calls :meth:`evaluate`); ``scale`` (the size axis
        :func:`best_scale` minimises over); ``run_axes`` (grid axes in order);
        ``static_axes`` (the run axes that change array shapes: one compiled program per
        value); ``verdicts`` (the verdict names its runs may get, ``"diverged"`` among
        them); :meth:`static`, :meth:`run_vars`, :meth:`summary`.
    Required of ``kind = "trained"``
        ``hyper(cfg, runs)`` (per-run traced hyperparameters, one row per run),
        ``trainer(static)`` (an :func:`iclsim.engine.trainer.build_trainer` trainer) and
        ``assess(cfg, static, runs, params, loss, key)`` (per-run results: ``verdict``,
        ``diverged`` and the entries of :meth:`run_vars`; ``loss`` the raw per-step loss,
        ``key`` the eval key).
    Required of ``kind = "evaluated"``
        ``evaluate(cfg, static, runs, progress)`` (per-run results as for ``assess``;
        ``progress(n)`` is called as units of work finish).

    Every other member has the default written here.
    """

    #: the kinds a setting may declare
    KINDS = ("trained", "evaluated")
    #: run axes over which :func:`best_scale` takes each scale's best value (default) or
    #: pools the runs with the seeds (``tuning="pooled"``); default: the engine's common
    #: tuning axes (learning rate, init scale).
    tuning_axes: tuple[str, ...] = TUNING_AXES
    #: what the progress bar counts: the units of ``static(...).steps``
    progress_unit: str = "run"

    @property
    def pooled_axes(self) -> tuple[str, ...]:
        """Run axes pooled by ``best_scale(..., tuning="pooled")``: the seeds and the tuning
        axes."""
        return ("seed",) + tuple(self.tuning_axes)

    def static(self, cfg, **static_values) -> Hashable:
        """The hashable static part of the runs at one value of each static axis; it has an
        int ``steps`` (training steps, or progress units of an evaluated run).  Required."""
        raise NotImplementedError

    def run_vars(self, cfg) -> dict[str, tuple[tuple[str, ...], dict]]:
        """For each extra per-run entry of ``assess``/``evaluate``: (its dims after the run
        axes, attrs).  Required."""
        raise NotImplementedError

    def summary(self, ds) -> str:
        """The table printed by ``iclsim run`` and ``iclsim show``.  Required."""
        raise NotImplementedError

    def figures(self, ds, out_dir, formats) -> list:
        """Draw the setting's figures; return their paths.  Default: none (``[]``)."""
        return []

    def data(self, cfg, static):
        """Arrays shared by the runs of a trained group (covariance, importances, …), passed
        to the trainer.  Default: none (``{}``)."""
        return {}

    def oracle(self, cfg, coords: dict) -> tuple[dict, dict, dict]:
        """(data_vars, coords, attrs) of the theory on the same named axes as the runs.
        Default: no theory (``{}, {}, {}``)."""
        return {}, {}, {}

    def metadata(self, cfg, coords: dict) -> tuple[dict, dict, dict]:
        """(data_vars, coords, attrs) that describe the runs but are no theory (a model's
        family, the chance level, …), merged beside the oracle's.  Default: none."""
        return {}, {}, {}

    def aggregate(self, cfg, ds):
        """The labelled result with the setting's aggregates (means, intervals) added, so
        they are stored.  Default: ``ds`` unchanged."""
        return ds

    def check(self, cfg) -> None:
        """Raise a one-line ``ValueError`` for anything the run would fail on (missing
        files, …) before anything is written.  Default: nothing to check."""

    def provenance(self, cfg) -> dict:
        """What besides the iclsim code made the numbers (library versions, the sha256 of
        model files, …): it enters the code key.  Default: nothing (``{}``, left out of
        the key)."""
        return {}

    def group_runs(self, cfg) -> int:
        """Runs per group (file): the unit of resume.  Default: ``train.max_group_runs``
        (0: a whole static shape per group)."""
        return cfg.train.max_group_runs

    def verdict_parts(self, ds):
        """The verdict parts of a result that stores none (``iclsim run --check``).
        Default: ``None`` (no verdict)."""
        return None


#: The members a setting must declare, by ``kind`` (``"any"``: every kind).
REQUIRED_MEMBERS = {
    "any": ("name", "config_class", "kind", "scale", "run_axes", "static_axes", "verdicts",
            "static", "run_vars", "summary"),
    "trained": ("hyper", "trainer", "assess"),
    "evaluated": ("evaluate",),
}


def _declares(setting, member: str) -> bool:
    value = getattr(type(setting), member, None)
    if value is None:
        value = getattr(setting, member, None)
    return value is not None and value is not getattr(Setting, member, None)


def check_setting(setting, name: str | None = None) -> None:
    """Check a setting's declaration once; raise a one-line ``TypeError`` naming the first
    missing or inconsistent member, e.g. ``setting 'toy': missing member 'evaluate'
    (required for kind='evaluated')``."""
    label = repr(name if name is not None else getattr(setting, "name", type(setting).__name__))
    where = f"setting {label}"
    if not isinstance(setting, Setting):
        raise TypeError(f"{where}: {type(setting).__name__} does not subclass "
                        "iclsim.engine.setting.Setting")
    for member in REQUIRED_MEMBERS["any"]:
        if not _declares(setting, member):
            raise TypeError(f"{where}: missing member {member!r} (required of every setting)")
    if setting.kind not in Setting.KINDS:
        raise TypeError(f"{where}: kind={setting.kind!r}; choose one of "
                        + ", ".join(map(repr, Setting.KINDS)))
    for member in REQUIRED_MEMBERS[setting.kind]:
        if not _declares(setting, member):
            raise TypeError(f"{where}: missing member {member!r} "
                            f"(required for kind={setting.kind!r})")
    axes = tuple(setting.run_axes)
    for what, names in (("scale", (setting.scale,)), ("static_axes", setting.static_axes),
                        ("tuning_axes", setting.tuning_axes)):
        stray = [a for a in names if a not in axes]
        if stray:
            raise TypeError(f"{where}: {what} {stray} not among run_axes {list(axes)}")
    if "diverged" not in setting.verdicts:
        raise TypeError(f"{where}: verdicts {list(setting.verdicts)} lack 'diverged'")


def is_evaluation(setting) -> bool:
    """Whether ``setting`` declares ``kind = "evaluated"`` (rather than ``"trained"``)."""
    return setting.kind == "evaluated"


class Runs:
    """Named per-run columns of a group: ``runs["seed"]`` is the seed of every run.

    ``run_id`` is the flat index of each run in the sweep grid (-1: padding).
    """

    def __init__(self, columns: dict[str, np.ndarray], run_id: np.ndarray):
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        self.run_id = np.asarray(run_id)

    def __getitem__(self, name) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.run_id)

    def take(self, rows) -> "Runs":
        return Runs({k: v[rows] for k, v in self.columns.items()}, self.run_id[rows])


@dataclass
class Group:
    """Runs sharing one static shape.  Arrays have one row per (padded) run."""

    index: int
    static: Any
    hyper: dict
    runs: Runs

    @property
    def run_id(self) -> np.ndarray:
        return self.runs.run_id

    @property
    def seed(self) -> np.ndarray:
        return self.runs["seed"]


def axis_values(cfg, setting: Setting) -> dict[str, np.ndarray]:
    """The grid's coordinate values, in ``setting.run_axes`` order."""
    out = {}
    for name in setting.run_axes:
        out[name] = (np.arange(cfg.axes.seeds) if name == "seed"
                     else np.asarray(getattr(cfg.axes, name)))
    return out


def _grid_runs(axes: dict, run_ids: np.ndarray) -> Runs:
    shape = tuple(len(v) for v in axes.values())
    idx = np.unravel_index(run_ids, shape)
    return Runs({name: values[i] for (name, values), i in zip(axes.items(), idx)}, run_ids)


def pad_group(group: Group, rows: int) -> Group:
    """Pad ``group`` to ``rows`` rows with copies of its first run, marked ``run_id = -1``."""
    n = len(group.run_id)
    extra = rows - n
    if extra <= 0:
        return group
    take = np.concatenate([np.arange(n), np.zeros(extra, int)])
    runs = group.runs.take(take)
    runs.run_id[n:] = -1
    return dataclasses.replace(group, hyper={k: v[take] for k, v in group.hyper.items()},
                               runs=runs)


def build_groups(cfg, setting: Setting) -> list[Group]:
    """One group per combination of static-axis values (split by ``train.max_group_runs``,
    padded to equal sizes so that the pieces share one compiled program)."""
    axes = axis_values(cfg, setting)
    shape = tuple(len(v) for v in axes.values())
    all_ids = np.arange(int(np.prod(shape))).reshape(shape)
    static_pos = [setting.run_axes.index(a) for a in setting.static_axes]
    out = []
    for combo in itertools.product(*[range(shape[p]) for p in static_pos]):
        sel = [slice(None)] * len(shape)
        for p, i in zip(static_pos, combo):
            sel[p] = i
        runs = _grid_runs(axes, all_ids[tuple(sel)].ravel())
        static = setting.static(cfg, **{setting.run_axes[p]: axes[setting.run_axes[p]][i].item()
                                        for p, i in zip(static_pos, combo)})
        hyper = ({} if is_evaluation(setting) else
                 {k: np.asarray(v) for k, v in setting.hyper(cfg, runs).items()})
        size = setting.group_runs(cfg) or len(runs)
        for start in range(0, len(runs), size):
            rows = slice(start, start + size)
            group = Group(len(out), static, {k: v[rows] for k, v in hyper.items()},
                          runs.take(rows))
            out.append(pad_group(group, size))
    return out


def eval_key(cfg):
    """The evaluation key of a sweep (shared by all runs: common random numbers)."""
    import jax

    return jax.random.fold_in(jax.random.key(cfg.seed), EVAL_KEY_SALT)


def window_loss(loss: np.ndarray, window: int) -> np.ndarray:
    """(runs, steps) → (runs, steps // window): means over consecutive windows of steps."""
    usable = loss.shape[1] // window * window
    # explicit sizes: a process of a multi-host sweep may hold no valid run of a group
    return loss[:, :usable].reshape(loss.shape[0], usable // window, window).mean(axis=2)


def finalize_group(cfg, setting: Setting, group: Group, rows, params, loss) -> dict:
    """Assess the valid ``rows`` of a trained group; arrays ready for a group file."""
    runs = group.runs.take(rows)
    out = _encode(setting, dict(setting.assess(cfg, group.static, runs, params, loss,
                                               eval_key(cfg))))
    out["loss"] = window_loss(np.asarray(loss), cfg.train.loss_every)
    out["run_id"] = runs.run_id
    return out


def evaluate_group(cfg, setting: Setting, group: Group, progress) -> dict:
    """Evaluate the valid runs of a group (a ``kind = "evaluated"`` setting); arrays ready
    for a group file."""
    runs = group.runs.take(np.flatnonzero(group.run_id >= 0))
    out = _encode(setting, dict(setting.evaluate(cfg, group.static, runs, progress)))
    out["run_id"] = runs.run_id
    return out


def _encode(setting, out: dict) -> dict:
    """Verdict names → small integer codes (checked against ``setting.verdicts``)."""
    verdicts = np.asarray(out.pop("verdict")).astype(str)
    unknown = sorted(set(verdicts) - set(setting.verdicts))
    if unknown:
        raise ValueError(f"{setting.name}.assess returned unknown verdict(s) {unknown}")
    out["verdict"] = np.array([setting.verdicts.index(v) for v in verdicts], np.int8)
    out["diverged"] = np.asarray(out["diverged"], bool)
    return out


def describe_run(cfg, setting: Setting, run_id: int) -> str:
    """``n_context=8, seed=1, …`` for one run of the grid."""
    axes = axis_values(cfg, setting)
    runs = _grid_runs(axes, np.asarray([run_id]))
    return ", ".join(f"{name}={runs[name][0]}" for name in axes)


def build_dataset(cfg, setting: Setting, merged: dict):
    """The labelled result: per-run arrays scattered on the named run axes, the oracle's
    variables on the same axes beside them."""
    import xarray as xr

    axes = axis_values(cfg, setting)
    dims = tuple(axes)
    shape = tuple(len(v) for v in axes.values())
    run_id = merged["run_id"]

    def scatter(values, fill, dtype):
        grid = np.full((int(np.prod(shape)),) + values.shape[1:], fill, dtype=dtype)
        grid[run_id] = values
        return grid.reshape(shape + values.shape[1:])

    def fill_for(values):
        kind = np.asarray(values).dtype.kind
        if kind == "b":
            return False, bool
        if kind in "iu":
            return -1, np.int64
        return np.nan, float

    codes = scatter(merged["verdict"], -1, np.int8)
    names = np.asarray(tuple(setting.verdicts) + ("missing",))
    data_vars = {
        "verdict": (dims, np.where(codes >= 0, names[codes], "missing").astype(str),
                    {"long_name": "verdict of the run (" + ", ".join(setting.verdicts) + ")"}),
        "diverged": (dims, scatter(merged["diverged"], False, bool),
                     {"long_name": "NaN/inf in training (left out of every aggregate)"}),
        "present": (dims, scatter(run_id, -1, np.int64) >= 0,
                    {"long_name": "run held in this file (multi-host shards)"}),
    }
    coords = dict(axes)
    if "loss" in merged:  # trained settings
        window = cfg.train.loss_every
        data_vars["loss"] = (dims + ("step",), scatter(merged["loss"], np.nan, float),
                             {"long_name": f"training loss, mean over windows of {window} "
                                           "steps"})
        coords["step"] = (np.arange(merged["loss"].shape[1]) + 1) * window
    for name, (extra, attrs) in setting.run_vars(cfg).items():
        values = merged[name]
        fill, dtype = fill_for(values)
        data_vars[name] = (dims + tuple(extra), scatter(values, fill, dtype), attrs)
    attrs = {"description": cfg.description, "scale_axis": setting.scale,
             "tuning_axes": " ".join(setting.tuning_axes),
             "pooled_axes": " ".join(setting.pooled_axes)}
    grid_coords = dict(coords)
    for part in (setting.oracle, setting.metadata):
        part_vars, part_coords, part_attrs = part(cfg, grid_coords)
        data_vars.update(part_vars)
        coords.update(part_coords)
        attrs.update(part_attrs)
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    return setting.aggregate(cfg, ds)


def best_scale(ds, var: str = "eval_risk", *, zero_risk=None, tuning: str = "best", **sel):
    """The simulated best scale: argmin over {0} ∪ trained scales of the scale's risk.

    The scale axis, the tuning axes and the pooled axes are those the setting declared
    (``Setting.scale``, ``tuning_axes``, ``pooled_axes``), stored in the dataset's attrs
    ``scale_axis``, ``tuning_axes``, ``pooled_axes`` (a result without the last two gets
    the defaults of :class:`Setting`).
    A scale's risk is, with ``tuning="best"`` (the default), the smallest over the tuning
    axes (by default learning rate, init scale) of the mean ``var`` over seeds —
    each size at its best-tuned hyperparameters, as a size with a narrow good learning-rate
    band is tuned in practice; with ``tuning="pooled"``, the mean over all runs pooled over
    seeds and the tuning axes.  Diverged runs are left out of every
    mean; a tuning point whose seeds all diverged is left out of the minimum.  Scale 0 is
    the trivial predictor ŷ = 0 with risk ``zero_risk`` (default: the dataset's
    ``trivial_risk``).  ``sel`` fixes coordinates first.
    This one function serves ``iclsim show``, the figures and ``iclsim compare``.

    Returns
    -------
    xarray.DataArray
        The best scale (float) over the remaining dims, its ``attrs["tuning"]`` the mode
        (:func:`tuning_word` gives the words to print); NaN where no trained scale has a
        finite value (all diverged).
    """
    import xarray as xr

    if tuning not in TUNING_WORDS:
        raise ValueError(f"tuning: {tuning!r} is not allowed; choose one of "
                         + ", ".join(map(repr, TUNING_WORDS)))
    scale = ds.attrs.get("scale_axis")
    if not scale:
        raise ValueError("best_scale: the dataset names no scale axis (attrs['scale_axis'], "
                         "written from the setting's declared scale)")
    tuning_axes = tuple(str(ds.attrs.get("tuning_axes", " ".join(TUNING_AXES))).split())
    pooled_axes = tuple(str(ds.attrs.get("pooled_axes", " ".join(("seed",) + tuning_axes))
                            ).split())
    values = ds[var].where(~ds["diverged"])
    if sel:
        values = values.sel(**{k: v for k, v in sel.items() if k in values.dims})
    if tuning == "pooled":
        values = values.mean(dim=[d for d in pooled_axes if d in values.dims])
    else:
        if "seed" in values.dims:
            values = values.mean(dim="seed")  # NaN where every seed diverged
        values = values.min(dim=[d for d in tuning_axes if d in values.dims])  # NaN skipped
    if zero_risk is None:
        zero_risk = float(ds["trivial_risk"]) if "trivial_risk" in ds else np.inf
    scales = np.concatenate([[0], ds[scale].values]).astype(float)
    table = values.fillna(np.inf).transpose(scale, ...)
    first = xr.full_like(table.isel({scale: 0}), zero_risk, dtype=float)
    stacked = np.concatenate([first.values[None], table.values], axis=0)
    best = scales[np.argmin(stacked, axis=0)]
    best = np.where(np.isfinite(values.transpose(scale, ...).values).any(axis=0), best, np.nan)
    return xr.DataArray(best, dims=first.dims, coords=first.coords, name=f"best_{scale}_sim",
                        attrs={"tuning": tuning})


def tuning_word(best) -> str:
    """The words for a :func:`best_scale` result (or a ``tuning`` name) in a table header or
    a figure footer: ``"best-tuned (…)"`` or ``"pooled (…)"``."""
    tuning = best if isinstance(best, str) else best.attrs.get("tuning", "best")
    return TUNING_WORDS[tuning]


_REGISTRY: dict[str, Any] = {
    "linear": "iclsim.linear.sweep:LINEAR",
    "parity": "iclsim.parity.sweep:PARITY",
    "transformer": "iclsim.transformer.sweep:TRANSFORMER",
    "llm": "iclsim.llm.sweep:LLM",
}


def register(name: str, target) -> None:
    """Register a setting: a :class:`Setting` object (checked now by :func:`check_setting`)
    or ``"module:ATTRIBUTE"`` (imported and checked once, on first use).

    Raises
    ------
    TypeError
        One line naming the first missing or inconsistent member of the setting.
    """
    if not isinstance(target, str):
        check_setting(target, name)
    _REGISTRY[name] = target


def setting_names() -> tuple[str, ...]:
    """The names of the registered settings (``linear``, ``parity``, …), in registration order.

    Returns
    -------
    tuple of str
        The names :func:`get_setting` accepts (the ``setting`` key of a sweep file).
    """
    return tuple(_REGISTRY)


def get_setting(name: str) -> Setting:
    """The registered setting ``name`` (imported lazily, checked once)."""
    if name not in _REGISTRY:
        raise KeyError(name)
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, attr = target.split(":")
        setting = getattr(importlib.import_module(module), attr)
        check_setting(setting, name)
        _REGISTRY[name] = target = setting
    return target
