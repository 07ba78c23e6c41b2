"""Run the ``iclsim`` CLI with a fault injected from outside the product code.

    python tests/fault_injection.py KILL_AFTER_CHECKPOINTS CORRUPT -- iclsim-args...

``KILL_AFTER_CHECKPOINTS`` > 0: SIGKILL this process right after that many chunk
checkpoints have been written (``store.save_checked`` on a ``.ckpt.`` file), as a
``kill -9`` from outside would.  The product has no test hook: the fault is a
wrapper around the store's writer, installed here before the CLI starts.
"""

import os
import signal
import sys

from iclsim import cli
from iclsim.engine import store


def main(argv):
    sep = argv.index("--")
    kill_after = int(argv[0])
    args = argv[sep + 1:]
    written = {"n": 0}
    original = store.save_checked

    def save_then_maybe_die(path, arrays, meta=None):
        out = original(path, arrays, meta)
        if ".ckpt." in os.path.basename(str(path)):
            written["n"] += 1
            if kill_after and written["n"] >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        return out

    store.save_checked = save_then_maybe_die
    return cli.main(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
