"""The architecture cases: what the suite runs on. The fixture files (``files.py``) and the cases derived for
blocks no fixture entry checks (``derived.py``, from the scan of ``discovery.py``), each an ``ArchCase``
(``arch.py``) that builds tiny random blocks, models and inputs; where a check runs (``setting.py``: a
``Setting``) and on which device (``devices.py``: the device table).

Nothing here knows the implementation under test, the checks or pytest. This module and ``devices.py`` import
no torch: the pytest entry point reads the device table in every run of the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .arch import ArchCase

__all__ = ["load_cases"]


def load_cases(folder: Path | None = None, derive: bool = True) -> list[ArchCase]:
    """The hand-written cases of ``folder`` (``files.py``: a file that breaks the schema raises
    ``FixtureError``), then (``derive``) the cases ``derived.py`` derives for the installed transformers'
    MoE blocks that no hand case checks."""
    from .arch import FIXTURES_DIR
    from .files import load_fixture_cases

    folder = folder or FIXTURES_DIR
    cases, excluded = load_fixture_cases(folder)
    if derive:
        from .derived import derived_cases

        cases += derived_cases(cases, excluded=excluded).cases
    return cases

