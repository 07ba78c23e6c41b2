"""iclsim: why larger language models do in-context learning differently, by computation.

Analytic oracles, trained models and the gap between them for the two settings of
Shi, Wei, Xu & Liang (ICML 2024).  ``from iclsim import linear``.
"""

__version__ = "0.1.0"

from iclsim import linear  # noqa: E402

__all__ = ["linear", "__version__"]
