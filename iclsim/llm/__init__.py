"""Real language models, offline: packaged GGUF models fetched once into a local
cache, the VADER sentiment snippets as tasks, prompts, scoring and interval statistics.

Optional: importing this package imports nothing heavy; only ``iclsim.llm.backend`` imports
torch/transformers, and only when it is imported.
"""
