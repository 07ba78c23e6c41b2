"""The ``iclsim`` command: run sweeps, show and plot stored results.

    iclsim run SWEEP.toml [--set key=value ...] [--out DIR] [--quiet] [--resume-stale]
               [--distributed [--coordinator HOST:PORT --num-processes N --process-id I]]
               [--check]
    iclsim show RESULTS... [--check]
    iclsim plot RESULTS... [--out DIR] [--format png --format pdf]
    iclsim keys [SETTING]
    iclsim compare RESULT [RESULT ...] [--out DIR]
    iclsim llm fetch NAME... | iclsim llm models

Errors in sweep files and overrides are one line naming the key and what is
allowed, with exit status 2.  ``--check`` (run, show): exit 1 when the summary verdict
is DIFFERS (``iclsim.engine.verdict``), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from iclsim.engine.config import (
    ConfigError, apply_overrides, describe, describe_markdown, load_toml, parse,
)
from iclsim.engine.store import SweepLocked
from iclsim.llm.errors import LLMError

from iclsim.engine.setting import get_setting, setting_names

SETTINGS = setting_names()


def _setting(name):
    """The registered setting ``name`` (:func:`iclsim.engine.setting.register`)."""
    try:
        return get_setting(name)
    except (KeyError, TypeError):
        raise ConfigError(f"setting: {name!r} is not allowed; choose one of "
                          f"{', '.join(setting_names())}") from None


def load_config(path, overrides=()):
    """Parse a sweep file (plus ``key=value`` overrides) into its setting's config."""
    raw = apply_overrides(load_toml(path), overrides)
    setting = _setting(raw.get("setting", "linear"))
    return setting, parse(setting.config_class, raw)


def _distributed_setup(args):
    """The multi-host set-up of ``run`` (None without --distributed), checked before anything
    is read or written (:mod:`iclsim.engine.distributed`)."""
    from iclsim.engine import distributed

    given = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
             "--process-id": args.process_id}
    if not args.distributed:
        stray = [flag for flag, value in given.items() if value is not None]
        if stray:
            raise ConfigError(f"{stray[0]}: only with --distributed (a multi-host run); add "
                              "--distributed or leave it out")
        return None
    return distributed.resolve(args.coordinator, args.num_processes, args.process_id)


def _cmd_run(args) -> int:
    setup = _distributed_setup(args)
    overrides = list(args.set)
    if args.out:
        overrides.append(f"output_dir={json.dumps(str(args.out))}")
    setting, cfg = load_config(args.sweep, overrides)
    _check_writable(cfg.output_dir, "output_dir")
    if setup is not None:
        from iclsim.engine import distributed

        distributed.initialize(setup=setup)
    from iclsim.engine.sweep import run_sweep

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        outcome = run_sweep(cfg, setting, quiet=args.quiet, resume_stale=args.resume_stale)
    result = outcome.path / "result.nc"
    if setup is not None:
        from iclsim.engine import distributed

        outcome, missing = distributed.merged_outcome(outcome, setting, cfg.figures.formats)
        result = outcome.path / f"result.p{setup.process_id}.nc"
        if missing:
            print(f"result:  {result} (this host's shard; {len(missing)} other shard(s) not "
                  f"visible here: copy every host's result.p*.nc into one folder and run "
                  f"'iclsim show FOLDER')")
            return 0
        print(setting.summary(outcome.dataset))
        print(f"\nresult:  {result} (this host's shard; the summary above is of all "
              f"{setup.num_processes} shards, as 'iclsim show {outcome.path}' reads them)")
    else:
        print(setting.summary(outcome.dataset))
        print(f"\nresult:  {result}")
    for path in outcome.figures:
        print(f"figure:  {path}")
    if outcome.figure_error:
        print(f"figures: not drawn ({outcome.figure_error}); the result is stored, redraw with "
              f"'iclsim plot {outcome.path}'")
    state = "resumed" if outcome.resumed else "fresh"
    stale = outcome.dataset.attrs.get("resumed_stale_from")
    if stale:
        state += f" (stale: resumed from code {stale})"
    print(f"{state} run, {outcome.compiles} compile(s), wall time {outcome.wall_time:.1f} s")
    return _check_code(outcome.dataset, setting) if args.check else 0


def _check_code(ds, setting) -> int:
    """``--check``: 1 when the summary verdict (:mod:`iclsim.engine.verdict`) is DIFFERS."""
    from iclsim.engine import verdict

    parts = verdict.from_dataset(ds)
    if parts is None:
        parts = setting.verdict_parts(ds)
    result = verdict.fold(parts or [])
    print(f"check: {result.word} (exit {result.exit_code})")
    return result.exit_code


def _check_writable(folder, what: str) -> None:
    """One clear line if ``folder`` cannot be created or written (before any work is done)."""
    import tempfile

    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what}: cannot write to {str(path)!r} ({reason}); choose a "
                          "writable folder with --out DIR") from None


def _resolve(path) -> Path:
    """One result folder from a path: a result folder or file, or a folder holding several
    results (one per code version or config), which resolves to the newest with a note."""
    from iclsim.engine.store import result_dirs

    dirs = result_dirs(path)
    path = Path(path)
    if path.is_file():
        return path
    if not dirs and not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if not dirs:
        raise ConfigError(f"{path}: no result.nc below this folder (has the sweep finished?)")
    if len(dirs) > 1:
        print(f"note: {len(dirs)} results below {path}; using the newest, {dirs[0]}",
              file=sys.stderr)
    return dirs[0]


def _load(path):
    from iclsim.engine.store import load_result

    path = _resolve(path)
    try:
        ds = load_result(path)
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read a result ({exc})") from None
    return ds, _setting(ds.attrs.get("setting", "linear"))


def _cmd_show(args) -> int:
    code = 0
    for i, results in enumerate(args.results):
        ds, setting = _load(results)
        if len(args.results) > 1:
            print(f"{'' if i == 0 else chr(10)}== {results}")
        print(setting.summary(ds))
        if args.check:
            code = max(code, _check_code(ds, setting))
    return code


def _cmd_plot(args) -> int:
    for results in args.results:
        ds, setting = _load(results)
        src = _resolve(results)
        out = Path(args.out) if args.out else (src if src.is_dir() else src.parent)
        _check_writable(out, "--out")
        try:
            paths = setting.figures(ds, out, tuple(args.format or ("png", "pdf")))
        except Exception as exc:  # a figure bug must not hide the stored numbers
            raise ConfigError(f"{results}: figures not drawn ({type(exc).__name__}: {exc})"
                              ) from None
        for path in paths:
            print(f"figure:  {path}")
    return 0


def _cmd_keys(args) -> int:
    setting = _setting(args.setting)
    if args.markdown:
        print("\n".join(describe_markdown(setting.config_class)).rstrip())
        return 0
    print(f"Keys of a {setting.name} sweep file (TOML):")
    print("\n".join(describe(setting.config_class)))
    return 0


def _compare_dir(first_path, placed: dict) -> Path:
    """Default output of ``compare``: ``<results root>/compare-<hash>-<hash>…/`` (the config
    hashes of the results in column order), the results root being the folder that holds
    the first result's config folder."""
    resolved = _resolve(first_path)
    folder = resolved if resolved.is_dir() else resolved.parent
    root = folder.parent.parent if (folder / "provenance.json").exists() else folder.parent
    return root / "-".join(["compare"] + [ds.attrs.get("config_hash", name)
                                          for name, ds in placed.items()])


def _cmd_compare(args) -> int:
    from iclsim import compare

    paths_in = list(args.results) + ([args.transformer] if args.transformer else [])
    if not paths_in:
        raise ConfigError("compare: give at least one result (a sweep folder or its result.nc)")
    loaded = []
    for path in paths_in:
        ds, setting = _load(path)
        if setting.name not in compare.ORDER:
            raise ConfigError(f"{path}: a {setting.name} result has no column; compare takes "
                              "results of " + ", ".join(compare.ORDER))
        if path == args.transformer and setting.name != "transformer":
            raise ConfigError(f"{path}: --transformer is a {setting.name} result; give a "
                              f"transformer one, e.g. from {compare.PRESETS['transformer']}")
        loaded.append(ds)
    try:
        placed = compare.place(loaded)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out = Path(args.out) if args.out else _compare_dir(paths_in[0], placed)
    _check_writable(out, "--out")
    try:
        paths = compare.draw(loaded, out, tuple(args.format or ("png", "pdf")))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for path in paths:
        print(f"figure:  {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iclsim",
        description="Sweeps of trained in-context learners against their exact oracles.",
        epilog="Sweep files live in sweeps/ (see docs/sweeps.md); 'iclsim keys linear' and "
               "'iclsim keys parity' list every key.",
    )
    from iclsim import __version__

    parser.add_argument("--version", action="version", version=f"iclsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run (or resume) a sweep file",
                         description="Run a sweep: train every grid point in one compiled program "
                         "per static shape, evaluate, store result.nc, draw figures. Rerunning the "
                         "same config resumes from the last checkpoint.")
    run.add_argument("sweep", help="path to a sweep TOML file, e.g. sweeps/quickstart.toml")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key, e.g. --set train.steps=500 --set axes.rank=[1,2] "
                          "(values are TOML; repeatable)")
    run.add_argument("--out", metavar="DIR",
                     help="root folder of the results (default: output_dir of the sweep file, "
                          "'results'); the result goes to DIR/<name>-<config hash>/<code hash>/")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--check", action="store_true",
                     help="exit 1 when the summary verdict is DIFFERS (0 otherwise), so a "
                          "verification can gate CI")
    run.add_argument("--resume-stale", action="store_true",
                     help="resume this config's newest folder even if it was made by other "
                          "iclsim code (recorded in the result as resumed_stale_from); by "
                          "default a change of code starts a fresh folder")
    run.add_argument("--distributed", action="store_true",
                     help="multi-host: every process runs this same command, holds the runs "
                          "of its own devices and writes its own shard (result.p<I>.nc); "
                          "the processes meet through jax.distributed, set up by the three "
                          "flags below, else JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                          "JAX_PROCESS_ID, else a cluster JAX detects (SLURM, Open MPI, ...)")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="with --distributed: address of process 0 and a free port on it, "
                          "the same on every process")
    run.add_argument("--num-processes", metavar="N",
                     help="with --distributed: number of processes (>= 1)")
    run.add_argument("--process-id", metavar="I",
                     help="with --distributed: this process, 0..N-1 (0 hosts the coordinator)")
    run.set_defaults(func=_cmd_run)
    show = sub.add_parser("show", help="print the summary table of a stored result",
                          description="Print the summary table of a stored result.")
    show.add_argument("results", nargs="+",
                      help="sweep output folder(s) or result.nc file(s); a folder holding "
                           "several results resolves to the newest")
    show.add_argument("--check", action="store_true",
                      help="exit 1 when the summary verdict of any result is DIFFERS")
    show.set_defaults(func=_cmd_show)
    plot = sub.add_parser("plot", help="redraw the figures of a stored result",
                          description="Redraw figures from a stored result (no training).")
    plot.add_argument("results", nargs="+",
                      help="sweep output folder(s) or result.nc file(s); a folder holding "
                           "several results resolves to the newest")
    plot.add_argument("--out", help="output folder (default: next to the result)")
    plot.add_argument("--format", action="append", choices=("png", "pdf", "svg"),
                      help="figure format (repeatable; default png and pdf)")
    plot.set_defaults(func=_cmd_plot)
    keys = sub.add_parser("keys", help="list every key of a sweep file with type and range",
                          description="List every key of a sweep file.")
    keys.add_argument("setting", nargs="?", default="linear", choices=SETTINGS)
    keys.add_argument("--markdown", action="store_true",
                      help="print the key tables of docs/sweeps.md")
    keys.set_defaults(func=_cmd_keys)
    compare = sub.add_parser(
        "compare", help="side-by-side figure: model scale vs noise sensitivity, one column per "
        "result",
        description="Draw scale_vs_noise.{png,pdf} from stored results (no training), one "
        "column per result placed by its setting, left to right: setting 1 (linear regression, "
        "rank-r LSA): risk vs context label-noise variance σ² per rank r; setting 2 (sparse "
        "parity, m heads): risk vs context label-flip probability p per head count m; trained "
        "softmax transformers: risk vs σ² per size over the LSA ladder; real language models: "
        "accuracy vs the flipped fraction p per model; theory lines from the stored oracle "
        "values, trained models as points ± the error of the seed-mean; bottom row: the best "
        "scale vs the noise, "
        "theory and simulation, falling as the noise grows.",
        epilog="Example: iclsim run sweeps/linear_label_noise.toml; iclsim run "
        "sweeps/parity_label_flip.toml; iclsim compare results/linear_label_noise-<hash> "
        "results/parity_label_flip-<hash> --out figures/")
    compare.add_argument("results", metavar="RESULT", nargs="*",
                         help="sweep folders or their result.nc files, any number, one per "
                              "setting, in any order: each is placed by its setting (columns "
                              "linear, parity, transformer, llm, left to right); linear, parity "
                              "and transformer results need more than one eval.label_noise / "
                              "eval.label_flip value (e.g. from sweeps/linear_label_noise.toml, "
                              "sweeps/parity_label_flip.toml, "
                              "sweeps/transformer_label_noise.toml, sweeps/llm_quick.toml); "
                              "the older form LINEAR_RESULT PARITY_RESULT [LLM_RESULT] is the "
                              "same")
    compare.add_argument("--transformer", metavar="RESULT",
                         help="a transformer result (the same as giving it as a RESULT)")
    compare.add_argument("--out", metavar="DIR",
                         help="output folder (default: <results root>/compare-<config hash "
                              "of each result, in column order>/ beside the results)")
    compare.add_argument("--format", action="append", choices=("png", "pdf", "svg"),
                         help="figure format (repeatable; default png and pdf)")
    compare.set_defaults(func=_cmd_compare)
    from iclsim.llm.cli import add_subcommands

    add_subcommands(sub)
    return parser


def _exit_on_interrupt(signum, frame):  # pragma: no cover - exercised in a subprocess test
    """Ctrl-C: leave at once with status 130.

    Every file iclsim writes is written to a temporary name and renamed, so stopping
    here never leaves a half-written checkpoint or result (a stray temporary file is
    removed by the next run); ``os._exit`` skips interpreter teardown, where an
    interrupt inside XLA's threads could crash the process (exit 139).
    """
    import os

    try:
        sys.stderr.write("\niclsim: interrupted; rerun the same command to resume\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def main(argv=None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    handled = argv is None and threading.current_thread() is threading.main_thread()
    if handled:
        signal.signal(signal.SIGINT, _exit_on_interrupt)
    try:
        return _dispatch(args)
    finally:
        if handled:
            # the work is done and written: a Ctrl-C during interpreter shutdown is ignored
            # (Python restores the default handler, which would kill the process with
            # SIGINT, for a handler that is a function, but keeps SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _dispatch(args) -> int:
    """Run one command; user errors become one line on stderr and exit status 2."""
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. 'iclsim keys | head'
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        print(f"iclsim: error: {exc}", file=sys.stderr)
        return 2
    except (SweepLocked, LLMError) as exc:
        print(f"iclsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iclsim: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
