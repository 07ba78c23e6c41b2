"""Setting 3: trained softmax transformers of several sizes on setting 1's noisy in-context
linear regression, measured against the LSA ladder L_r(σ²) and the Bayes floor
(``docs/transformer.md``).

* :mod:`iclsim.transformer.model` — a GPT-2-style decoder as pure functions, padded and masked
  so that every size of a sweep shares one compiled program;
* :mod:`iclsim.transformer.references` — Bayes-optimal (posterior mean), OLS and ridge
  predictors;
* :mod:`iclsim.transformer.config` — the sweep-file schema;
* :mod:`iclsim.transformer.sweep` — the engine setting ``TRANSFORMER``;
* :mod:`iclsim.transformer.analysis` — aggregates, statistics (clean rung, local noise
  sensitivity, ladder fit, the law's test) and tables, from a stored result;
* :mod:`iclsim.transformer.figures` — its figures.
"""
