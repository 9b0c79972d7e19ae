"""The run's account at the end (``run/terminal.py``): every line within 100 columns, and where one behaviour
breaks several checks, the root named and the rest marked as following from it."""

from __future__ import annotations

from moe_conformance.checks.table import CHECKS
from moe_conformance.run import terminal


def _records(arch: str, red: dict[str, str]) -> list[dict]:
    """One record per check of ``arch``: ``red`` check -> kind, the others passed."""
    return [{"arch": arch, "check": check, "id": f"{arch}-{check}", "outcome": red.get(check, "passed"),
             "message": f"{arch}-{check}: broken" if check in red else ""} for check in CHECKS]


# A wrapper that forgets the routing weights: the output is wrong, so every check that compares it fails too.
FORGETS_WEIGHTS = {c: "failed" for c in ("output_matches", "restore_semantics", "whole_model", "experts_implementation", "routing_properties")}


def test_one_broken_behaviour_is_one_root():
    results = _records("a_long_architecture_name_moe", FORGETS_WEIGHTS) + _records("mixtral", {})
    assert terminal.roots(results) == {"a_long_architecture_name_moe": {
        "output_matches": ["restore_semantics", "whole_model", "experts_implementation", "routing_properties"]}}
    headers, rows = terminal.summarise(results)
    row = dict(zip(headers, rows[0]))
    assert row[CHECKS["output_matches"].short] == "FAIL 1/1"
    assert {row[CHECKS[c].short] for c in FORGETS_WEIGHTS if c != "output_matches"} == {"(FAIL)"}
    lines = terminal.failure_lines(results)
    assert lines[0].startswith("a_long_architecture_name_moe: output_matches (root)"), lines
    assert "restore_semantics, whole_model, experts_implementation, routing_properties" in " ".join(lines)


def test_independent_failures_are_each_a_root():
    results = _records("qwen3_moe", {"no_side_effects": "failed", "experts_are_linear": "failed"})
    assert terminal.roots(results) == {"qwen3_moe": {"experts_are_linear": [], "no_side_effects": []}}


def test_every_line_fits_100_columns():
    results = _records("a_long_architecture_name_moe", {**FORGETS_WEIGHTS, "no_side_effects": "crash"})
    results += [r for arch in ("mixtral", "qwen3_moe", "glm4_moe_lite") for r in _records(arch, {})]
    headers, rows = terminal.summarise(results)
    lines = [*terminal.render_table(headers, rows), *terminal.legend(results), *terminal.failure_lines(results)]
    assert max(map(len, lines)) <= terminal.WIDTH, max(lines, key=len)
    assert sum(line.startswith("a_long_architecture_name_moe") for line in lines) >= 2  # the table came in blocks
