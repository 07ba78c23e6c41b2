"""Run the ``iclsim`` CLI with a fault injected from outside the product code.

    python tests/fault_injection.py FAULT -- iclsim-args...

``FAULT`` is one of

* ``N`` (an integer > 0): SIGKILL this process right after ``N`` chunk checkpoints have
  been written (``store.save_checked`` on a ``.ckpt.`` file), as a ``kill -9`` from
  outside would; ``0``: no fault.
* ``int@PHASE``: send this process SIGINT (what Ctrl-C sends) at the named phase:

  - ``start``: on entry to ``run_sweep`` (config read, nothing computed or written);
  - ``chunk:N``: right after the N-th chunk checkpoint of this process is written
    (training under way);
  - ``trained:N``: right after the N-th group's trained parameters are written
    (before that group is evaluated);
  - ``group:N``: right after the N-th group's finished file is written (evaluated);
  - ``result``: right after ``result.nc`` is written (before the figures are drawn).

The product has no test hook: the faults are wrappers around the store's writers (and
``run_sweep``), installed here before the CLI starts.  The CLI is entered exactly as the
``iclsim`` command enters it (``cli.main()`` reading ``sys.argv``), so its own SIGINT
handler is installed.  A SIGINT sent to the process itself is delivered to that handler
before the wrapper returns, so the interruption happens at the phase, not after it.
"""

import os
import signal
import sys
from pathlib import Path

from iclsim import cli
from iclsim.engine import store, sweep


def _kind(path) -> str:
    p = Path(str(path))
    if ".ckpt." in p.name:
        return "chunk"
    if ".trained" in p.parts:
        return "trained"
    if p.name.startswith("group-"):
        return "group"
    return "other"


def main(argv):
    sep = argv.index("--")
    fault = argv[0]
    args = argv[sep + 1:]
    if fault.startswith("int@"):
        sig, phase = signal.SIGINT, fault[len("int@"):]
    else:
        sig, phase = signal.SIGKILL, f"chunk:{int(fault)}" if int(fault) else ""
    name, _, count = phase.partition(":")
    count = int(count or 1)
    if name not in ("", "start", "chunk", "trained", "group", "result"):
        raise SystemExit(f"fault_injection: unknown phase {phase!r}")
    seen = {"n": 0}

    def hit(kind):
        if kind == name:
            seen["n"] += 1
            if seen["n"] == count:
                os.kill(os.getpid(), sig)

    save_checked, save_dataset, run_sweep = store.save_checked, store.save_dataset, \
        sweep.run_sweep

    def save_checked_then_fault(path, arrays, meta=None):
        out = save_checked(path, arrays, meta)
        hit(_kind(path))
        return out

    def save_dataset_then_fault(path, ds):
        out = save_dataset(path, ds)
        if Path(str(path)).name.startswith("result"):
            hit("result")
        return out

    def run_sweep_after_fault(*a, **k):
        hit("start")
        return run_sweep(*a, **k)

    store.save_checked = save_checked_then_fault
    store.save_dataset = save_dataset_then_fault
    sweep.run_sweep = run_sweep_after_fault
    sys.argv = [sys.argv[0], *args]
    return cli.main()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
