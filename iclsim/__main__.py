"""``python -m iclsim``: the ``iclsim`` command (:func:`iclsim.cli.main`), for environments
where the console script is not on ``PATH``."""

import sys

from iclsim.cli import main

if __name__ == "__main__":
    sys.exit(main())
