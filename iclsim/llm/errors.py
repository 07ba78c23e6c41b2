"""The one error type of :mod:`iclsim.llm`.

A user can cause these (a model name that is not packaged, a cache file that is
partial or corrupt, data that was never fetched, a label word the tokenizer
cannot encode), so each carries ONE line naming the thing and what is allowed;
the command line turns it into ``iclsim: error: ...`` and exit status 2.
"""

from __future__ import annotations


class LLMError(ValueError):
    """A bad model name / cache file / data / label word: one-line message."""
