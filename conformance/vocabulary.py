"""The one vocabulary of results, defined once (as LLVM lit's PASS / FAIL / XFAIL / UNSUPPORTED / TIMEOUT / CRASH):
every outcome kind a test can come to, whom it blames, whether it leaves a run green, and the label the table,
the reports and the HTML page give it. Standard library only and no package-relative import: ``reports/matrix.py``
loads this file by path where nothing is installed (the reusable workflow's matrix job).

| kind | label | blames | green |
| --- | --- | --- | --- |
| ``passed`` | ok | | yes |
| ``failed`` | FAIL | the implementation: it broke the contract | no |
| ``timeout`` | TIMEOUT | the implementation: the test did not return within its time limit | no |
| ``crash`` | CRASH | the implementation: the process died (a signal, an abort, the OOM killer) | no |
| ``device`` | DEVICE | the implementation: a device error that poisons the context (CUDA device-side assert ...) | no |
| ``error`` | ERROR | the harness, a fixture or the original block: the implementation was not judged | no |
| ``skipped`` | skip | absent from this transformers, a known skip, uncovered, or not judged after a fault | yes |
| ``n/a`` | n/a | the check does not apply | yes |
| ``not offered`` | not offered | the implementation's declared contract levels do not promise it | yes |
| ``xfail`` | xfail | a known gap the fixture lists | yes |
"""

from __future__ import annotations

import traceback

PASSED, FAILED, ERROR, SKIPPED, NOT_APPLICABLE, NOT_OFFERED, XFAIL = (
    "passed", "failed", "error", "skipped", "n/a", "not offered", "xfail")
TIMEOUT, CRASH, DEVICE = "timeout", "crash", "device"

# Faults: the implementation took the process (or its device context) down. The test where it happened is one
# located failure of that kind; the architecture's remaining tests are not judged (skipped, saying why).
FAULTS = (TIMEOUT, CRASH, DEVICE)
# Red kinds, in the order the table lists them within a cell.
BLAMES_IMPLEMENTATION = (FAILED, *FAULTS)
BLAMES_HARNESS = (ERROR,)
RED = (*BLAMES_IMPLEMENTATION, *BLAMES_HARNESS)
GREEN = (PASSED, SKIPPED, NOT_APPLICABLE, NOT_OFFERED, XFAIL)
KINDS = (PASSED, *RED, SKIPPED, NOT_APPLICABLE, NOT_OFFERED, XFAIL)

# How a red kind is shown in a table cell: "<LABEL> <count>/<tests>".
LABELS = {FAILED: "FAIL", TIMEOUT: "TIMEOUT", CRASH: "CRASH", DEVICE: "DEVICE", ERROR: "ERROR"}
# What a fault did, in words, for the "not judged" reason of the architecture's other tests.
FAULT_WORDS = {TIMEOUT: "hung", CRASH: "crashed", DEVICE: "faulted the device"}
NOT_JUDGED = "not judged"


def is_red(kind: str) -> bool:
    return kind in RED


def cell(records: list[dict]) -> tuple[str, str]:
    """One architecture x check cell over its tests' records (``outcome``, and the ``uncovered`` / ``not_judged``
    flags of the results file), as ``(class, label)``: the worst kind decides the class (the HTML page's colour),
    the counts are in the label. The terminal table, the Markdown reports and the HTML page all draw cells so."""
    if not records:
        return "none", ""
    kinds = [r["outcome"] for r in records]
    n = len(kinds)
    red = red_cell(kinds)
    if red:
        return ("fault" if any(k in FAULTS for k in kinds) else "fail" if FAILED in kinds else "error"), red
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        return "other", " ".join(f"{k} {kinds.count(k)}/{n}" for k in unknown)
    if kinds.count(NOT_APPLICABLE) == n:
        return "na", "n/a"
    if any(r.get("uncovered") for r in records) and all(r.get("uncovered") or r["outcome"] == NOT_APPLICABLE for r in records):
        return "notoffered", "uncovered"  # the implementation has no wrapper for the block (or --covered-only)
    if any(r.get("not_judged") for r in records):
        return "skip", NOT_JUDGED
    if kinds.count(SKIPPED) + kinds.count(NOT_APPLICABLE) == n:
        return "skip", "skip"
    offered = kinds.count(NOT_OFFERED)
    if offered:
        judged = n - kinds.count(SKIPPED) - kinds.count(NOT_APPLICABLE)
        return "notoffered", "not offered" if offered == judged else f"not offered {offered}/{judged}"
    if XFAIL in kinds:
        return "xfail", f"xfail {kinds.count(XFAIL)}/{n}"
    return "ok", "ok"


def red_cell(kinds: list[str]) -> str:
    """The label of a cell holding at least one red outcome: each red kind with its count over the cell's tests,
    e.g. ``CRASH 1/8 FAIL 2/8``; the empty string where none is red."""
    return " ".join(f"{LABELS[k]} {kinds.count(k)}/{len(kinds)}" for k in RED if k in kinds)


# How a check says which kind it came to: it returns (passed) or raises one of these; anything else it raises is
# the harness' ERROR (``checks/outcomes.py`` turns them into kinds; ``KIND_OF`` below).
class ConformanceFailure(AssertionError):
    """The implementation does not conform; the message says where and how."""

class HarnessError(Exception):
    """The original block, the fixture or the harness failed: the implementation was not judged. The message
    says what failed (and, for a fixture fault, names the fixture file and entry)."""

class NotApplicable(Exception):
    """The check does not apply to this architecture here; reported as n/a, with the reason."""

def fail(label: str, message: str) -> ConformanceFailure:
    return ConformanceFailure(f"{label}: {message}")

def where(exc: BaseException) -> str:
    """``file:line`` of the frame that raised ``exc``."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{frame.filename}:{frame.lineno}"

def raised(exc: BaseException, when: str = "") -> str:
    """``raised E: message (at file:line)``: how every message reports an exception."""
    return f"raised {type(exc).__name__}{when}: {exc} (at {where(exc)})"


KIND_OF = {ConformanceFailure: FAILED, HarnessError: ERROR, NotApplicable: NOT_APPLICABLE}
