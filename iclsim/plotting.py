"""Figure helpers shared by both settings (matplotlib, headless).

Figures are drawn only from stored results; every file is written atomically
(to a hidden temporary name, then renamed), so a half-written figure never
appears under its final name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["pyplot", "save_figure", "scale_colors", "add_footer", "result_config", "sweep_footer"]


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_dir, stem, formats, *, dpi=110) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<fmt>`` for every format, atomically; return the paths."""
    paths = []
    for fmt in formats:
        path = Path(out_dir) / f"{stem}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp.{fmt}")
        fig.savefig(tmp, dpi=dpi, format=fmt)
        tmp.replace(path)
        paths.append(path)
    return paths


def scale_colors(plt, n):
    """``n`` colours of the viridis map, one per model scale (rank or head count)."""
    return plt.cm.viridis(np.linspace(0.0, 0.92, max(n, 1)))


def add_footer(fig, text, *, height=0.035):
    """``text`` in small print along the bottom edge, with that strip kept free by the layout."""
    fig.text(0.005, 0.005, text, fontsize=6.5, color="0.4", ha="left", va="bottom")
    engine = fig.get_layout_engine()
    if engine is not None and hasattr(engine, "set"):
        engine.set(rect=(0.0, height, 1.0, 1.0 - height))


def result_config(ds) -> dict:
    """The resolved sweep config stored in a result's attributes ({} if absent or unreadable)."""
    try:
        return json.loads(ds.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        return {}


def sweep_footer(ds, run_bits, model_text) -> str:
    """Footer text: sweep name and hash, training (mode, ``model_text``, steps, batch), the
    run settings ``run_bits``, evaluation prompts and the JAX dtype of a stored result."""
    cfg = result_config(ds)
    bits = list(run_bits)
    train, ev = cfg.get("train", {}), cfg.get("eval", {})
    if train:
        mode = train.get("mode", "?")
        text = f"training: {mode}, {model_text}, {train.get('steps', '?')} steps"
        if mode == "monte_carlo":
            text += f" × {train.get('batch', '?')} prompts"
        bits.insert(0, text)
    if ev:
        bits.append(f"evaluation: {ev.get('n_prompts', '?')} MC prompts per point")
    if ds.attrs.get("dtype"):
        bits.append(f"JAX dtype {ds.attrs['dtype']}")
    name = cfg.get("name")
    if name:
        bits.insert(0, f"sweep {name} {ds.attrs.get('config_hash', '')}".strip())
    return "; ".join(bits)
