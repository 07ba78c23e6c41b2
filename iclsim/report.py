"""Plain-text tables for terminal reports."""

from __future__ import annotations

from typing import Iterable, Sequence


def format_table(rows: Iterable[Sequence], headers: Sequence[str], title: str | None = None) -> str:
    """Right-aligned fixed-width table; floats are printed with 5 significant decimals."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.5f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body)
    return "\n".join(lines)
