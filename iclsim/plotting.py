"""Figure helpers shared by every setting (matplotlib, headless).

Figures are drawn only from stored results; every file is written atomically
(to a hidden temporary name, then renamed), so a half-written figure never
appears under its final name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["pyplot", "save_figure", "scale_colors", "add_footer", "wrap_footer", "result_config", "sweep_footer"]


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


def _text_width(fig, text, fontsize) -> float:
    """Width of ``text`` at ``fontsize`` as a fraction of the figure's width."""
    probe = fig.text(0.0, 0.0, text, fontsize=fontsize)
    try:
        width = probe.get_window_extent(renderer=fig.canvas.get_renderer()).width
    finally:
        probe.remove()
    return width / fig.bbox.width


def wrap_footer(fig, text, *, fontsize=6.5, width=0.99) -> list[str]:
    """``text`` broken into lines no wider than ``width`` (a fraction of the figure's width).

    Explicit newlines are kept.  Breaks at "; " between items first (the ";" stays at the end of the line), then at
    spaces inside an item that is too long on its own; a single word wider than the
    figure stays whole.  Widths are measured with the figure's renderer, so the result
    holds for every output format and dpi (text and figure scale together).
    """
    def fits(line):
        return _text_width(fig, line, fontsize) <= width

    lines = []
    for paragraph in text.split("\n"):  # explicit line breaks are kept
        items = paragraph.split("; ")
        start = len(lines)
        for item_no, item in enumerate(items):
            piece = item if item_no == len(items) - 1 else item + ";"
            if len(lines) > start and fits(f"{lines[-1]} {piece}"):
                lines[-1] = f"{lines[-1]} {piece}"
            elif fits(piece):
                lines.append(piece)
            else:  # one item wider than the figure: break it at spaces
                for word in piece.split(" "):
                    if len(lines) > start and lines[-1] and fits(f"{lines[-1]} {word}"):
                        lines[-1] = f"{lines[-1]} {word}"
                    else:
                        lines.append(word)
        if len(lines) == start:
            lines.append("")
    return lines


def add_footer(fig, text, *, height=0.035):
    """``text`` in small print along the bottom edge, with that strip kept free by the layout.

    The text is wrapped to the figure's width (:func:`wrap_footer`); ``height`` is the
    smallest strip kept free (a fraction of the figure's height), grown to fit the lines.
    """
    fontsize = 6.5
    lines = wrap_footer(fig, text, fontsize=fontsize)
    fig.text(0.005, 0.005, "\n".join(lines), fontsize=fontsize, color="0.4", ha="left",
             va="bottom", linespacing=1.25)
    line = 1.25 * fontsize / 72.0 / fig.get_figheight()  # one line, as a fraction of the height
    height = max(height, len(lines) * line + 0.01)
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
