"""Shared by the benchmark scripts: markdown tables and updating one section of RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A pandas table as a markdown table, floats rounded to ``digits``."""
    def cell(value) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace the section that starts with ``heading`` (or append it); other sections stay as they are."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"{heading}\n\n{body.strip()}\n"
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end:] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
