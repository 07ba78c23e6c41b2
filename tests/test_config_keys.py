"""What the config hash covers: every key that changes a stored number, nothing else.

Keys declared ``spec(..., key=False)`` are left out of the hash; for each of them a test
here shows that changing it reuses the result folder (or, for a fresh run, gives bitwise
the same numbers).  For a sample of the keys that stay in the hash, a test shows that
changing it changes a stored number or a shape.  Evidence is a comparison of stored
arrays, never of the code's own hash with itself.
"""

import dataclasses
import shutil

import numpy as np
import pytest

from iclsim.engine import config as config_module
from iclsim.engine.config import config_hash, unkeyed_keys
from iclsim.engine.sweep import run_sweep
from iclsim.linear.sweep import LINEAR, LinearSweepConfig
from test_provenance import Interrupt, _interrupt_after
from test_provenance import _cfg as _provenance_cfg

#: The keys of the linear schema left out of the config hash, each with its evidence below.
UNKEYED = {"name", "description", "output_dir", "figures.formats", "train.chunk_steps"}

#: Monte Carlo training with the statistic sampler (no leave-one-out): the evidence here is
#: about the engine's keys, not the sampler, and these chunk programs compile ~4x faster than
#: those of the token sampler (the default).
STATISTIC = ("train.sampler='statistic'", "train.loo=false")


def _cfg(root, *overrides):
    """test_provenance's tiny linear sweep (30 steps in chunks of 10), statistic sampler."""
    return _provenance_cfg(root, *STATISTIC, *overrides)


def _numbers(ds) -> dict:
    """Every stored numeric array of a result (data variables and coordinates)."""
    out = {}
    for name, var in {**ds.data_vars, **ds.coords}.items():
        if var.dtype.kind in "biuf":
            out[name] = var.values
    return out


def _assert_bitwise(ds, ref):
    got, want = _numbers(ds), _numbers(ref)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert got[name].tobytes() == want[name].tobytes(), name  # bitwise, NaN included


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run_sweep(_cfg(tmp_path_factory.mktemp("ref")), LINEAR, quiet=True)


def _copy(reference, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(reference.path.parent.parent, root)
    return root


def test_unkeyed_keys_are_exactly_those_with_evidence():
    assert set(unkeyed_keys(LinearSweepConfig)) == UNKEYED


@pytest.mark.parametrize("override", ['description="another text"', 'figures.formats=["svg"]',
                                      "train.chunk_steps=7", f"output_dir='elsewhere'"])
def test_unkeyed_key_reuses_the_result(reference, tmp_path, override):
    root = _copy(reference, tmp_path)
    if override.startswith("output_dir"):
        # output_dir moves the folder, not its name: the same config folder name
        moved = _cfg(tmp_path / "elsewhere")
        assert config_hash(moved) == reference.dataset.attrs["config_hash"]
        return
    again = run_sweep(_cfg(root, override), LINEAR, quiet=True)
    assert again.path.relative_to(root) == reference.path.relative_to(
        reference.path.parent.parent)
    assert again.resumed and again.compiles == 0  # nothing trained, nothing compiled
    _assert_bitwise(again.dataset, reference.dataset)
    if override.startswith("description"):
        assert again.dataset.attrs["description"] == "another text"
    if override.startswith("figures"):
        # and the sweep draws what the new key asks for (test_sweep's reference draws none)
        assert not again.figure_error, again.figure_error
        assert again.figures and {p.suffix for p in again.figures} == {".svg"}
        assert all(p.exists() for p in again.figures)


def test_chunk_steps_gives_bitwise_the_same_numbers_from_scratch(reference, tmp_path):
    """The evidence for leaving train.chunk_steps out of the hash (reference: chunks of 10 of
    30 steps; here 20 + 10: other boundaries and a remainder), in a fresh folder.  The chunk
    program of 20 steps is the one the resume test below uses too (one compile for both)."""
    fresh = run_sweep(_cfg(tmp_path, "train.chunk_steps=20"), LINEAR, quiet=True)
    assert not fresh.resumed
    _assert_bitwise(fresh.dataset, reference.dataset)


def test_resume_with_other_chunk_steps_is_bitwise_equal(reference, tmp_path, monkeypatch):
    """Interrupted after one chunk of 10 steps, resumed with chunks of 20: steps 11..30 run
    (counted: 20, not 30 from the start), and the numbers are those of the uninterrupted
    reference."""
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(Interrupt):
            run_sweep(_cfg(tmp_path), LINEAR, quiet=True)
    steps = _count_steps(monkeypatch)
    out = run_sweep(_cfg(tmp_path, "train.chunk_steps=20"), LINEAR, quiet=True)
    assert out.resumed
    assert steps["n"] == 20
    _assert_bitwise(out.dataset, reference.dataset)


def test_name_changes_no_number(reference, tmp_path):
    """The name is in the folder name, not the hash; a fresh run under another name gives
    bitwise the same numbers."""
    fresh = run_sweep(_cfg(tmp_path, "name='other'"), LINEAR, quiet=True)
    assert fresh.path.parent.name == f"other-{reference.dataset.attrs['config_hash']}"
    _assert_bitwise(fresh.dataset, reference.dataset)


def _leaves(cls, prefix=""):
    hints = config_module._type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if config_module._is_dataclass_type(hints[f.name]):
            yield from _leaves(hints[f.name], key)
        else:
            yield key, f


def test_every_other_key_enters_the_hash():
    """Every keyed leaf of the linear schema moves the hash when set to another value
    (cheap; the stored-number evidence for a sample is below)."""
    base = LinearSweepConfig()
    seen = set()
    for key, f in _leaves(LinearSweepConfig):
        if key in UNKEYED:
            continue
        raw = config_module.to_dict(base)
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        value = node[last]
        if isinstance(value, bool):
            new = not value
        elif f.metadata.get("choices"):
            new = next((c for c in f.metadata["choices"] if c != value), None)
            if new is None:  # one allowed value (setting = "linear")
                continue
        elif isinstance(value, list):
            if isinstance(value[0], int):  # a shorter grid, or another single value
                new = value[:-1] if len(value) > 1 else [value[0] + 1]
            else:  # the largest value doubled (lists are decreasing or free)
                new = [value[0] * 2 if value[0] else 1.0] + value[1:]
        elif isinstance(value, str):
            new = value + "x"
        else:
            new = value + 1 if isinstance(value, int) else value / 2 if value else 0.5
        node[last] = new
        try:
            cfg = config_module.parse(LinearSweepConfig, raw)
        except config_module.ConfigError:
            continue  # that value is not allowed with the others: no second value to try
        assert config_hash(cfg) != config_hash(base), key
        seen.add(key)
    assert {"seed", "train.steps", "eval.n_prompts", "axes.rank", "spectrum.values",
            "precision"} <= seen


#: A sample of keyed keys (traced values: no recompilation, a few seconds each) and the
#: stored variable that must change: one per way a key reaches the numbers (a traced training
#: value, the covariance, an evaluation level).  Static-shape keys and the second key of each
#: way are in the slow list; seed changes the loss in test_training_key_change_trains_again,
#: and the evaluation keys eval.label_noise, eval.n_prompts and eval.sampler change a stored
#: number in test_evaluation_key_reevaluates_without_training.
CHANGES = [
    ("axes.learning_rate=[0.02]", "loss"),
    ("spectrum.values=[2.0, 0.25]", "risk"),
    ("eval.input_noise=[0.5]", "eval_risk"),
]
SLOW_CHANGES = [
    ("axes.init_scale=[0.2]", "loss"),  # twin: axes.learning_rate (a traced training value)
    ("spectrum.rotation_seed=1", "eval_risk"),  # twin: spectrum.values (the covariance)
    ("train.steps=20", "loss"),
    ("train.batch=4", "loss"),
    ("train.loss_every=3", "loss"),
    ("eval.n_prompts=128", "eval_risk_mc"),
    ("eval.batch=16", "eval_risk_mc"),
    ("axes.n_context=[5]", "risk"),
    ("train.final_lr_fraction=0.5", "loss"),
]


def _changed(ds, ref, var) -> bool:
    a, b = ds[var].values, ref[var].values
    return a.shape != b.shape or a.tobytes() != b.tobytes()


@pytest.mark.parametrize("override,var", CHANGES + [
    pytest.param(*c, marks=pytest.mark.slow) for c in SLOW_CHANGES])
def test_keyed_key_changes_a_stored_number(reference, tmp_path, override, var):
    out = run_sweep(_cfg(tmp_path, override), LINEAR, quiet=True)
    assert out.dataset.attrs["config_hash"] != reference.dataset.attrs["config_hash"]
    assert _changed(out.dataset, reference.dataset, var), override


# ------------------------------------------------------------- training and evaluation keyed apart


def _count_steps(monkeypatch):
    """Count the training steps run (a wrapper on the engine's compiled chunk programs)."""
    from iclsim.engine import sweep

    real = sweep._compiled
    steps = {"n": 0}

    def counting(trainer_fn, static, n_steps, mesh):
        init, run, final = real(trainer_fn, static, n_steps, mesh)

        def run_counted(*args):
            steps["n"] += n_steps
            return run(*args)

        return init, run_counted, final

    monkeypatch.setattr(sweep, "_compiled", counting)
    return steps


def _trained_params(root) -> dict:
    from iclsim.engine import store

    files = sorted((root / ".trained").glob("*/*/group-*.npz"))
    assert files
    return {f"{f.parent.parent.name}/{f.name}/{k}": v for f in files
            for k, v in store.load_checked(f)[0].items()}


@pytest.mark.parametrize("override,var", [("eval.label_noise=[0.0, 2.0]", "eval_risk"),
                                          ("eval.n_prompts=128", "eval_risk_mc"),
                                          ('eval.sampler="tokens"', "eval_risk_mc")])
def test_evaluation_key_reevaluates_without_training(reference, tmp_path, monkeypatch, override,
                                                     var):
    """A keyed evaluation key: a new result (its stored evaluation ``var`` changes) from the
    stored trained parameters, bitwise that of a sweep trained from scratch with the key."""
    root = _copy(reference, tmp_path)
    before = _trained_params(root)
    steps = _count_steps(monkeypatch)
    out = run_sweep(_cfg(root, override), LINEAR, quiet=True)
    assert steps["n"] == 0  # not one training step
    assert out.dataset.attrs["config_hash"] != reference.dataset.attrs["config_hash"]
    assert out.dataset.attrs["training_hash"] == reference.dataset.attrs["training_hash"]
    after = _trained_params(root)
    assert after.keys() == before.keys()
    for name in before:  # the stored trained parameters: untouched, bitwise
        assert after[name].tobytes() == before[name].tobytes(), name
    for name in ("gamma", "loss", "risk"):  # what the parameters are: bitwise the reference's
        assert out.dataset[name].values.tobytes() == reference.dataset[name].values.tobytes()
    assert _changed(out.dataset, reference.dataset, var), override  # a keyed key
    # and the whole result is bitwise that of a sweep trained from scratch with this config
    steps["n"] = 0
    fresh = run_sweep(_cfg(tmp_path / "scratch", override), LINEAR, quiet=True)
    assert steps["n"] == 30  # the counter sees training: 30 steps of the one group (one N)
    _assert_bitwise(out.dataset, fresh.dataset)


def test_training_key_change_trains_again(reference, tmp_path, monkeypatch):
    root = _copy(reference, tmp_path)
    steps = _count_steps(monkeypatch)
    out = run_sweep(_cfg(root, "seed=6"), LINEAR, quiet=True)
    assert steps["n"] > 0
    assert out.dataset.attrs["training_hash"] != reference.dataset.attrs["training_hash"]
    assert out.dataset.attrs["config_hash"] != reference.dataset.attrs["config_hash"]
    assert _changed(out.dataset, reference.dataset, "loss")  # seed is a keyed key


def test_keys_command_marks_the_unkeyed_keys(capsys):
    from iclsim import cli

    assert cli.main(["keys", "linear"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = {line.split()[0] for line in lines if "not in the config hash" in line}
    assert marked == UNKEYED


TRANSFORMER_TINY = """
name = "tiny_transformer"
setting = "transformer"
[spectrum]
values = [1.0, 0.25]
[model]
heads = [1]
width = [8]
layers = [1]
head_dim = 2
mlp_ratio = 2
[train]
steps = 24
chunk_steps = 24
warmup_steps = 4
batch = 16
loss_every = 4
[axes]
size = [1]
seeds = 2
learning_rate = [0.01]
n_context = [6]
[eval]
label_noise = [0.0, 1.0]
n_prompts = 64
batch = 32
ridge_lambda = [1.0]
[figures]
formats = []
"""


@pytest.mark.slow  # two transformer compilations (~1 min on 2 busy cores)
def test_transformer_chunk_steps_gives_bitwise_the_same_numbers(tmp_path):
    """The same evidence for the transformer setting (which inherits the engine's
    train.chunk_steps, key=False): one chunk of 24 steps vs 5+5+5+5+4."""
    import tomllib

    from iclsim.engine.config import apply_overrides, parse
    from iclsim.transformer.sweep import TRANSFORMER, TransformerSweepConfig

    def run(root, chunk):
        raw = apply_overrides(tomllib.loads(TRANSFORMER_TINY),
                              [f"output_dir='{root}'", f"train.chunk_steps={chunk}"])
        return run_sweep(parse(TransformerSweepConfig, raw), TRANSFORMER, quiet=True).dataset

    _assert_bitwise(run(tmp_path / "a", 24), run(tmp_path / "b", 5))


# ------------------------------------------------------------------------------ the parity schema


def _parity_cfg(root, *overrides):
    import tomllib

    from iclsim.engine.config import apply_overrides, parse
    from iclsim.parity.sweep import ParitySweepConfig
    from test_parity_sweep import TINY as PARITY_TINY

    small = ["axes.heads=[2]", "axes.seeds=1", "eval.label_flip=[0.0]", "eval.bit_flip=[0.0]",
             "eval.n_prompts=128", "eval.test_prompts=128", "eval.batch=128"]
    raw = apply_overrides(tomllib.loads(PARITY_TINY), [f"output_dir='{root}'", *small,
                                                        *overrides])
    return parse(ParitySweepConfig, raw)


def test_parity_unkeyed_keys_are_exactly_those_with_evidence():
    from iclsim.parity.sweep import ParitySweepConfig

    assert set(unkeyed_keys(ParitySweepConfig)) == UNKEYED


@pytest.mark.slow  # ~40 s idle (two parity compiles each); the linear twin is in the default run
@pytest.mark.parametrize("mode", ["monte_carlo", "population"])
def test_parity_chunk_steps_gives_bitwise_the_same_numbers(tmp_path, mode):
    """The evidence for leaving the parity train.chunk_steps out of the hash: 40 progressive
    steps (two phases of 20 for 2 heads) in one chunk, and in chunks of 7 that straddle the
    phase boundary, give bitwise the same stored numbers."""
    from iclsim.parity.sweep import PARITY

    one = run_sweep(_parity_cfg(tmp_path / "one", f"train.mode='{mode}'",
                                "train.chunk_steps=40"), PARITY, quiet=True)
    seven = run_sweep(_parity_cfg(tmp_path / "seven", f"train.mode='{mode}'",
                                  "train.chunk_steps=7"), PARITY, quiet=True)
    assert one.dataset.attrs["config_hash"] == seven.dataset.attrs["config_hash"]
    _assert_bitwise(seven.dataset, one.dataset)
