"""Scoreboards of the field's calibration projects (the peers) on the conformance suite.

    python reports/peers.py run llmcompressor              # the installed peer on the installed transformers
    python reports/peers.py run defuser -k "qwen3_moe-"    # a selection
    python reports/peers.py summary                        # reports/peers/README.md across every scoreboard

``run`` runs the suite on one built-in peer spec (``implementations/peers``: each adapter declares its ``SPEC``) with both load
paths (``--load both``: bfloat16 models cast with ``.to()`` and as ``from_pretrained(dtype=...)`` leaves them,
separate settings) through ``reports/generate.py``, and writes ``reports/peers/<project>-<version>-transformers-
<version>.md`` (generate.py's report, plus which load path each bfloat16 failure is on) and ``.json`` (the results
format ``--moe-report`` writes, with the run's ``peer`` and ``exit_code``). It exits 0 once the scoreboard is
written, whatever the peer scored: a scoreboard records a peer's failures, it does not gate on them.
``summary`` renders every ``reports/peers/*.json`` as one table, architectures x (peer, transformers), with the
findings in ``reports/findings/`` (``README.md``), and as the gate's coloured HTML matrix (``index.html``). The tox environments ``peer-*`` install each peer with the transformers it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPORTS = Path(__file__).resolve().parent
OUT = REPORTS / "peers"
FINDINGS = REPORTS / "findings"
sys.path.insert(0, str(REPORTS.parent))
sys.path.insert(0, str(REPORTS))

import matrix  # noqa: E402  (reports/matrix.py, beside this script: the page, and the outcome vocabulary)

GREEN = set(matrix.vocabulary.GREEN)


from moe_conformance.implementations import peers  # noqa: E402  (after the path above)


def run(spec: str, workers: str, keyword: str | None, merge: bool = False) -> int:
    import generate

    from moe_conformance.implementations.loader import load_implementation

    impl = load_implementation(spec)  # fails here, in one line, when the peer is not installed
    os.environ["MOE_CONFORMANCE_LOAD"] = "both"
    data = generate.run_suite(spec, workers, keyword, None)
    data["peer"] = {"spec": spec, "implementation": impl.describe(), "coverage_notes": coverage_notes(spec, data["results"])}
    stem = f"{_project_stem(impl)}-transformers-{data['environment']['transformers']}"
    OUT.mkdir(exist_ok=True)
    if merge:
        data = _merged(OUT / f"{stem}.json", data, generate)
    (OUT / f"{stem}.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    (OUT / f"{stem}.md").write_text(generate.render(data) + load_section(data["results"]))
    failed = sum(r["outcome"] == "failed" for r in data["results"])
    print(f"wrote reports/peers/{stem}.md and .json: {failed} failed (suite exit code {data['exit_code']})")
    return 0


def _merged(path: Path, data: dict, generate) -> dict:
    """``--merge``: the scoreboard at ``path`` with the architectures this selection ran replaced by its results
    (one architecture re-run after a harness fix, without re-running the rest); exit code and summary follow."""
    if not path.exists():
        sys.exit(f"--merge: no scoreboard {path} to merge into")
    old = json.loads(path.read_text())
    rerun = {r["arch"] for r in data["results"]}
    old["results"] = [r for r in old["results"] if r["arch"] not in rerun] + data["results"]
    failed = any(matrix.vocabulary.is_red(r["outcome"]) for r in old["results"])
    old["exit_code"] = 1 if failed else 0
    if "summary" in old:
        old["summary"] = generate.results_summary(old["results"], old.get("other_failures", []), old["exit_code"])
    old.setdefault("merged", []).append({"selection": data.get("selection"), "architectures": sorted(rerun)})
    old["peer"] = {**old.get("peer", {}), **{k: v for k, v in data["peer"].items() if k != "coverage_notes"}}
    old["peer"]["coverage_notes"] = {**old.get("peer", {}).get("coverage_notes", {}), **data["peer"].get("coverage_notes", {})}
    return old


def coverage_notes(spec: str, results: list[dict]) -> dict[str, str]:
    """Per uncovered architecture, the adapter's note where the project keys coverage on a model type it registers
    for the composite model users load rather than for the fixture's text model (``coverage_note``)."""

    from moe_conformance.cases import load_cases
    note = getattr(peers.adapter(spec), "coverage_note", None)
    uncovered = {r["arch"] for r in results if r["check"] == "covered" and r["outcome"] == "failed"}
    if note is None or not uncovered:
        return {}
    notes = {}
    for case in load_cases():
        if case.model_type in uncovered and not case.absent_reason():
            try:
                said = note(case)
            except Exception as exc:  # a note is commentary: it must not lose the scoreboard
                said = f"(no coverage note: {type(exc).__name__}: {exc})"
            if said:
                notes[case.model_type] = said
    return notes


def _project_stem(impl) -> str:
    """``defuser = Defuser 0.0.28 (...)`` (a built-in conversion's name) -> ``defuser-0.0.28``; a registry's
    description, ``llmcompressor 0.11.0 (11 wrappers, ...)`` -> ``llmcompressor-0.11.0``."""
    spec, _, described = impl.name.partition(" = ")
    words = described.split() if described else impl.describe().split()
    version = words[1] if len(words) > 1 else "unknown"
    return f"{spec.replace('.', '_').replace(':', '-')}-{version}"


def load_section(results: list[dict]) -> str:
    """Per architecture x check, where bfloat16 failures differ by load path: how many failed on each."""
    by = defaultdict(lambda: defaultdict(int))
    for r in results:
        if r.get("load") and r["outcome"] == "failed":
            by[(r["arch"], r["check"])][r["load"]] += 1
    rows = [(a, c, n.get("cast", 0), n.get("config_dtype", 0)) for (a, c), n in sorted(by.items()) if n.get("cast", 0) != n.get("config_dtype", 0)]
    if not rows:
        return "\n## bfloat16 by load path\n\nEvery bfloat16 failure fails on both load paths alike (or none failed).\n"
    lines = ["", "## bfloat16 by load path", "",
             "Failures that differ between `cast` (`model.to(torch.bfloat16)`; config.dtype unset) and `config_dtype` "
             "(as `from_pretrained(dtype=torch.bfloat16)` leaves the config):", "",
             "| architecture | check | failed (cast) | failed (config_dtype) |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {c} | {x} | {y} |" for a, c, x, y in rows]
    return "\n".join(lines) + "\n"


def cell(results: list[dict], note: str | None = None) -> str:
    """One architecture of one scoreboard: ``skip`` (absent), ``uncovered``, ``ok``, or the failing checks (with
    ``cast`` when every failure of that check is on the cast load path only)."""
    from moe_conformance.checks.table import CHECKS

    if all(r["outcome"] == "skipped" for r in results):
        return "skip"
    if any(r["check"] == "covered" and r["outcome"] == "failed" for r in results):
        return "uncovered (text model only)" if note else "uncovered"
    bad: dict[str, set] = defaultdict(set)
    for r in results:
        if r["outcome"] not in GREEN:
            bad[r["check"]].add(r.get("load") or "all")
    if not bad:
        return "ok"
    if all(loads == {"cast"} for loads in bad.values()):
        return "FAIL (cast only)"
    names = [(CHECKS[c].short if c in CHECKS else c) + (" (cast)" if loads == {"cast"} else "") for c, loads in bad.items()]
    return "FAIL " + ", ".join(names)


def summary() -> int:
    boards = [json.loads(p.read_text()) | {"_file": p.name} for p in sorted(OUT.glob("*.json"))]
    if not boards:
        sys.exit("no scoreboards in reports/peers/: run `python reports/peers.py run SPEC` first")
    columns = [f"{b['_file'].rsplit('-transformers-', 1)[0]} @ {b['environment']['transformers']}" for b in boards]
    per = [defaultdict(list) for _ in boards]
    for i, b in enumerate(boards):
        for r in b["results"]:
            per[i][r["arch"]].append(r)
    archs = sorted({a for p in per for a in p})
    lines = [
        "# Peers: the field's MoE calibration projects on the conformance suite",
        "",
        "Each column is one scoreboard (`reports/peers/<project>-<version>-transformers-<version>.md`, its results "
        "beside it as JSON), made by `python reports/peers.py run SPEC` (tox: `peer-*`); this page by "
        "`python reports/peers.py summary`. A cell: `ok` (every check green, or not offered by the project's declared "
        "contract levels), `uncovered` (the project's own conversion leaves the block alone: calibration would be "
        "silently skipped), `skip` (absent from that transformers), or `FAIL` and the failing checks (`(cast)`: only "
        "for models cast with `.to(bfloat16)`, not for `from_pretrained(dtype=...)`; `FAIL (cast only)`: every failure "
        "is on that path, the architecture is green as `from_pretrained(dtype=...)` loads it).",
        "",
        "| scoreboard | implementation | tests failed / run | suite exit code |",
        "| --- | --- | --- | --- |",
    ]
    for column, b in zip(columns, boards):
        ran = [r for r in b["results"] if r["outcome"] != "skipped"]
        failed = sum(matrix.vocabulary.is_red(r["outcome"]) for r in ran)
        lines.append(f"| [{column}]({b['_file'][:-5]}.md) | {b['environment']['implementation']} | {failed} / {len(ran)} | {b.get('exit_code')} |")
    lines += ["", "| architecture | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for arch in archs:
        cells = [cell(p[arch], b.get("peer", {}).get("coverage_notes", {}).get(arch)) if arch in p else "—" for p, b in zip(per, boards)]
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    notes = [(column, arch, note) for column, b in zip(columns, boards) for arch, note in sorted(b.get("peer", {}).get("coverage_notes", {}).items())]
    if notes:
        lines += ["", "`uncovered (text model only)`: the project picks what to convert by model type, and registers the "
                  "composite model users load, not the text model this fixture builds:", ""]
        lines += [f"- {column}, {arch}: {note}" for column, arch, note in notes]
    lines += ["", "## Findings (each with a standalone reproducer in `reports/findings/`)", ""]
    for note in sorted(FINDINGS.glob("*.md")):
        title = note.read_text().splitlines()[0].lstrip("# ").strip()
        lines.append(f"- [{title}](../findings/{note.name}) — `reports/findings/{note.stem}.py`")
    lines += ["", "The same scoreboards as a coloured page, cell reasons on hover: [index.html](index.html) "
              "(`reports/matrix.py`)."]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    # The gate's HTML matrix over the same results files: rows architectures, a coloured column per scoreboard.
    files = [str(p) for p in sorted(OUT.glob("*.json"))]
    page = subprocess.run([sys.executable, str(REPORTS / "matrix.py"), *files, "-o", str(OUT / "index.html"), "--findings", str(FINDINGS)],
                          capture_output=True, text=True)
    if page.returncode:
        sys.exit(f"reports/matrix.py failed ({page.returncode}): {page.stderr[-2000:]}")
    print(f"wrote reports/peers/README.md and index.html: {len(archs)} architectures x {len(columns)} scoreboards")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="run the suite on one peer and write its scoreboard")
    one.add_argument("spec", choices=peers.specs())
    one.add_argument("-k", dest="keyword", default=None, help="pytest -k selection")
    one.add_argument("-n", "--workers", default="1", help="pytest-xdist workers (default 1)")
    one.add_argument("--merge", action="store_true", help="replace only the selected architectures' results in the existing scoreboard")
    sub.add_parser("summary", help="render reports/peers/README.md from every scoreboard")
    args = parser.parse_args()
    return run(args.spec, args.workers, args.keyword, args.merge) if args.command == "run" else summary()


if __name__ == "__main__":
    sys.exit(main())
