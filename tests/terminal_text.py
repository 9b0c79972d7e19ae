"""Reading what a suite run printed: the architecture x check table comes in blocks of columns (each within 100
columns, each repeating the architecture), and long lines of the account are wrapped with a two-space indent."""

from __future__ import annotations

import re


def table_rows(text: str, *archs: str) -> dict[str, list[str]]:
    """Each architecture's cells (whitespace-split words), its rows of every block joined in order."""
    rows: dict[str, list[str]] = {arch: [] for arch in archs}
    for line in text.splitlines():
        for arch in archs:
            if line.startswith(f"{arch} "):
                rows[arch] += line.split()[1:]
    return rows


def unwrapped(text: str) -> str:
    """``text`` with each wrapped line joined back to the line it continues."""
    return re.sub(r"\n  (?=\S)", " ", text)
