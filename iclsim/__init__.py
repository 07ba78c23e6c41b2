"""iclsim: why larger language models do in-context learning differently, by computation.

Exact oracles, trained models and the gap between them for the theory of Shi, Wei, Xu &
Liang (ICML 2024), in four settings that share one engine (:mod:`iclsim.engine`: sweeps,
stores, verdicts):

* :mod:`iclsim.linear` — setting 1, rank-r linear self-attention on in-context linear
  regression (``docs/theory/linear.md``);
* :mod:`iclsim.parity` — setting 2, m-head attention on in-context sparse parity
  (``docs/theory/parity.md``);
* :mod:`iclsim.transformer` — trained softmax transformers of several sizes on setting 1's
  noisy regression, against its ladder (``docs/transformer.md``);
* :mod:`iclsim.llm` — real language models, offline, under flipped demonstration labels
  (``docs/llm.md``; extra ``llm``).

:mod:`iclsim.testing` is the verification kit.  The subpackages are imported on first
attribute access (``iclsim.linear``, or ``from iclsim import linear``), so ``import iclsim``
itself is light and never imports torch.  The command line is ``iclsim`` (or
``python -m iclsim``).
"""

import importlib
import os

__version__ = "0.1.0"

#: The public subpackages, imported lazily on first access (those present in this copy).
_LAZY = tuple(name for name in ("linear", "parity", "testing", "transformer", "llm")
              if os.path.isdir(os.path.join(os.path.dirname(__file__), name)))

__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"iclsim.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'iclsim' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
