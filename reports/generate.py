"""Write the compatibility report for the installed transformers version.

    python reports/generate.py                          # run the suite on the reference wrappers, write the report
    python reports/generate.py --impl llmcompressor     # another implementation
    python reports/generate.py -k glm4_moe              # a selection (pytest's -k)
    python reports/generate.py results/*.json           # render results a run already wrote (--moe-report)
    python reports/generate.py --html reports/index.html reports/*.json   # and the HTML matrix of them all

Runs the conformance suite with the current interpreter (``pytest conformance --moe-report``), then writes
``reports/<impl>-transformers-<version>.md``: whether the suite passed (its exit code, at the top), the
completeness of the installed transformers' MoE classes (covered / excluded / uncovered, by name), the
architecture x check table, every failure's first message, the known gaps (xfail) and skips with their reasons;
with ``--json``, the results file (docs/results-schema.md) beside it, and with ``--kill-table --json`` the kill
table's too. ``--html PATH`` then writes the compatibility matrix (``reports/matrix.py``) of the given JSON files,
or, after a suite run, of every reports/*.json. Exits non-zero when the suite failed, so a red run is never a
green report. ``tox run -e report-tf457,report-tf518,report-tf523,report-tf524`` regenerates every reference
report, its JSON and reports/index.html.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

REPORTS = Path(__file__).resolve().parent
REPO = REPORTS.parent
sys.path.insert(0, str(REPO))  # conformance.results, when run from a checkout without an install

import matrix  # noqa: E402  (reports/matrix.py, beside this script: the HTML page)
vocabulary = matrix.vocabulary  # conformance/vocabulary.py, as the page reads it


def run_suite(impl: str, workers: str, keyword: str | None, device: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "results.json"
        command = [sys.executable, "-m", "pytest", "conformance", "-q", "-n", workers, "--impl", impl, f"--moe-report={raw}"]
        command += ["-k", keyword] if keyword else []
        command += ["--device", device] if device else []  # only where asked: the option is the GPU runner's
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if not raw.exists():
            sys.exit(f"the suite produced no results (exit {run.returncode}):\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
        data = json.loads(raw.read_text())
    data["exit_code"] = run.returncode  # the process's own, which also counts what the plugin cannot see
    if "summary" in data:
        data["summary"] = results_summary(data["results"], data.get("other_failures", []), run.returncode)
    if keyword:
        data["selection"] = keyword
    return data


def results_summary(results: list[dict], other_failures: list[dict], exit_code: int) -> dict:
    from moe_conformance.run.results import summary

    return summary(results, other_failures, exit_code)


def completeness_section(c: dict | None) -> list[str]:
    if not c:
        return ["## MoE classes of this transformers", "", "Not run in this selection (`test_registry_completeness`).", ""]
    lines = [
        "## MoE classes of this transformers (registry_completeness)",
        "",
        f"{c['found']} found by scanning transformers {c['transformers']}'s sources: {c['covered']} covered and "
        f"checked, {len(c['excluded'])} excluded (not calibration targets), {len(c['no_wrapper'])} without a "
        f"wrapper, {len(c['no_fixture'])} without a fixture entry.",
        "",
    ]
    lines += [f"- uncovered: `{name}` — no wrapper: calibration would be silently skipped" for name in c["no_wrapper"]]
    lines += [f"- unchecked: `{name}` — no fixture entry: the suite does not check it" for name in c["no_fixture"]]
    lines += [f"- excluded: `{name}` — {reason}" for name, reason in sorted(c["excluded"].items())]
    return lines + [""]


def provenance(data: dict) -> str:
    """Where the results came from: the suite's version and commit, the device, when and how long."""
    suite = data.get("suite") or {}
    commit = f" at {suite['commit'][:10]}{' (dirty)' if suite.get('dirty') else ''}" if suite.get("commit") else ""
    device = data["environment"].get("device") or {}
    on = f" on {device.get('kind')}{' (' + device['model'] + ')' if device.get('model') else ''}" if isinstance(device, dict) and device else ""
    took = f", started {data['started']}, took {data['duration_s']:.0f} s" if "duration_s" in data else ""
    return f"Suite {suite.get('version', '?')}{commit}{on}{took}." if suite or on or took else ""


# The kinds the headline counts by name; any other (the faults) follows them with its count.
HEADLINE = (vocabulary.FAILED, vocabulary.ERROR, vocabulary.PASSED, vocabulary.SKIPPED, vocabulary.NOT_APPLICABLE,
            vocabulary.NOT_OFFERED, vocabulary.XFAIL)


def render(data: dict) -> str:
    from moe_conformance.checks.table import CHECKS
    from moe_conformance.run.terminal import summarise, uncovered_lines

    env, results = data["environment"], data["results"]
    headers, rows = summarise(results)
    counts = defaultdict(int)
    for r in results:
        counts[r["outcome"]] += 1
    archs = {r["arch"] for r in results}
    # an architecture the implementation does not cover is skipped too (--covered-only), but it is not absent
    absent = sorted(
        {r["arch"] for r in results if r["outcome"] == "skipped" and not r.get("uncovered")}
        - {r["arch"] for r in results if r["outcome"] != "skipped" or r.get("uncovered")}
    )
    other = data.get("other_failures", [])
    failed = counts["failed"] + len(other)
    exit_code = data.get("exit_code")
    verdict = "PASSED" if not suite_failed(data) else f"FAILED (suite exit code {exit_code})"
    selection = f", selection `-k {data['selection']}`" if data.get("selection") else ""
    others = "".join(f", {n} {kind}" for kind, n in sorted(counts.items()) if kind not in HEADLINE)
    lines = [
        f"# Compatibility: {env['implementation']} on transformers {env['transformers']}",
        "",
        f"**Suite: {verdict}** — {failed} failed, {counts['error']} harness errors, {counts['passed']} passed, {counts['skipped']} skipped, "
        f"{counts['n/a']} n/a, {counts['not offered']} not offered, {counts['xfail']} xfail{others}{selection}.",
        "",
        f"torch {env['torch']}, Python {env['python']}, {env['platform']}. {provenance(data)} Generated by "
        f"`reports/generate.py`. {len(archs)} architectures in the fixtures, {len(archs) - len(absent)} present in "
        "this transformers.",
        "",
    ]
    if other:
        lines += ["## Failures outside the per-architecture checks", ""]
        lines += [f"- `{f['nodeid']}` ({f['when']}): " + (f["message"].strip().splitlines() or [""])[0][:500] for f in other]
        lines.append("")
    lines += completeness_section(data.get("completeness"))
    lines += [
        "## Architectures x checks",
        "",
        "A cell aggregates every variant, mode and dtype of that check: `ok`, `FAIL failed/total` (the "
        "implementation broke the contract), `ERROR errors/total` (the harness, a fixture or the original block "
        "failed), `skip` (the architecture is absent from this transformers), `uncovered` (the implementation has no "
        "wrapper for the block), `n/a` (the check does not apply), `not offered` (the implementation's declared "
        "contract levels do not promise what the check judges) or `xfail` (a known gap recorded in the fixtures, "
        "listed below with its reason).",
        "",
        tabulate(rows, headers=headers, tablefmt="github"),
        "",
        "Columns: " + "; ".join(f"`{spec.short}` = {name}" for name, spec in CHECKS.items()) + ".",
        "",
    ]
    lines += grouped_section(results, matrix.vocabulary.RED, "Failures, faults and harness errors (first message of each architecture x check)")
    lines += grouped_section(results, ("xfail",), "Known gaps (xfail), with the fixtures' reasons")
    uncovered = uncovered_lines(results, covered_only=False)
    if uncovered:
        lines += ["## Not covered by this implementation", ""] + [f"- {line}" for line in uncovered] + [""]
    if absent:
        lines += ["## Not in this transformers version", ""]
        reasons = {r["arch"]: r["message"] for r in results if r["outcome"] == "skipped"}
        lines += [f"- {reasons[arch]}" for arch in absent]
        lines.append("")
    return "\n".join(lines)


def grouped_section(results: list[dict], kinds: tuple[str, ...], title: str) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        if r["outcome"] in kinds:
            groups[(r["arch"], r["check"])].append(r)
    if not groups:
        return []
    lines = [f"## {title}", ""]
    for (arch, check), rs in sorted(groups.items()):
        message = (rs[0]["message"].splitlines() or [""])[0]
        lines.append(f"- **{arch} / {check}** ({len(rs)} tests, e.g. `{rs[0].get('id', rs[0]['nodeid'])}`): {message}")
    return lines + [""]


def run_kill_table(workers: str, keyword: str | None, device: str | None) -> dict:
    """The mutation kill table of tests/test_mutants.py (tests/conftest.py's kill_summary): per mutant, the
    check that caught it (the one it is aimed at runs first: tests/mutants.py's check_order), counted over the architectures it applies to; with what ran it."""
    from importlib.metadata import version

    selection = f"test_mutant_is_caught and ({keyword})" if keyword else "test_mutant_is_caught"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "kills.json"
        command = [sys.executable, "-m", "pytest", "tests/test_mutants.py", "-q", "-n", workers, "-k", selection, f"--kill-report={raw}"]
        command += ["--device", device] if device else []
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if not raw.exists():
            sys.exit(f"the mutation tests produced no kill table (exit {run.returncode}):\n{run.stdout[-3000:]}")
        kills = json.loads(raw.read_text())
    # The device it ran on: a kill table belongs to the reports of that transformers version on that device only.
    return {"schema": "moe-conformance/kill-table", "transformers": version("transformers"), "torch": version("torch"),
            "device": device or "cpu", "exit_code": run.returncode, "selection": keyword, **kills}


def kill_key(kills: dict) -> tuple[str, str]:
    """(transformers, device) of a kill table; tables written before the device was recorded ran on the CPU."""
    return kills["transformers"], kills.get("device", "cpu")


def kill_table_section(kills: dict) -> str:
    selection = f", selection `-k {kills['selection']}`" if kills.get("selection") else ""
    return "\n".join([
        "## Mutation kill table (tests/test_mutants.py)",
        "",
        f"{kills['mutants']} deliberately broken wrappers (tests/mutants.py) run through the suite on every "
        f"architecture they apply to: {kills['killed']}/{kills['applicable']} applicable (mutant, architecture) "
        f"pairs killed (test exit code {kills.get('exit_code', '?')}{selection}). A cell counts the architectures by "
        "the check that caught the mutant (the check it is aimed at runs first, then the others).",
        "",
        tabulate(kills["rows"], headers=["mutant", "caught by (architectures)"], tablefmt="github"),
        "",
    ])


def suite_failed(data: dict) -> bool:
    from moe_conformance.run.results import suite_status

    return suite_status(data.get("exit_code"), data["results"], data.get("other_failures")) == "failed"


def dumps(data: dict) -> str:
    """The results file as committed: the envelope indented, one result per line (a diff shows which changed)."""
    envelope = json.dumps({k: v for k, v in data.items() if k != "results"}, indent=1)
    records = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in data["results"])
    return envelope[:-2] + ',\n "results": [\n' + records + "\n ]\n}\n"


def stem_of(data: dict, impl: str) -> str:
    implementation = data.get("implementation")
    name = implementation["name"] if isinstance(implementation, dict) else data["environment"]["implementation"].split(" ")[0]
    kind = matrix.device_kind(data)
    name = name or impl
    return f"{name.replace(':', '-').replace('.', '_')}-transformers-{data['environment']['transformers']}" + ("" if kind == "cpu" else f"-{kind}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path, help="results (and kill-table) JSON files a run wrote (--moe-report, --json); render these instead of running the suite")
    parser.add_argument(
        "--impl",
        default="reference",
        metavar="SPEC",
        help="implementation under test, as pytest's --impl: 'reference' (default: this project's wrappers), "
        "'llmcompressor', a dotted module path defining CALIBRATION_WRAPPERS, or module.path:NAME",
    )
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k selection (e.g. an architecture); the kill table's too")
    parser.add_argument("-n", "--workers", default="2", help="pytest-xdist workers (default 2)")
    parser.add_argument("--device", default=None, help="passed to pytest's --device (default: the suite's, the CPU)")
    parser.add_argument("--json", action="store_true", help="also write the results file (and the kill table's) as JSON beside the report")
    parser.add_argument("--kill-table", action="store_true", help="also run the mutation tests and add their kill table")
    parser.add_argument("--out", "--output-dir", dest="output_dir", type=Path, default=None, metavar="DIR",
                        help="where the reports and JSON go (default: beside the first results file given; after a suite "
                        "run, this checkout's reports/)")
    parser.add_argument("--html", type=Path, default=None, metavar="PATH",
                        help="then write the HTML compatibility matrix of the given JSON files, or after a suite run of every reports/*.json")
    args = parser.parse_args()
    # Given files: results of one column (version x implementation x device) are merged, as on the page.
    given_runs, given_kills = matrix.load(args.results)
    runs = [run.data for run in given_runs] if args.results else [run_suite(args.impl, args.workers, args.keyword, args.device)]
    kills = {kill_key(data): data for _, data in given_kills}
    if args.kill_table:
        fresh = run_kill_table(args.workers, args.keyword, args.device)
        kills[kill_key(fresh)] = fresh
    if args.output_dir is None:  # rendering someone's results writes beside them, never into this checkout
        args.output_dir = args.results[0].resolve().parent if args.results else REPORTS
    failed_any = False
    for data in runs:
        stem = stem_of(data, args.impl)
        text = render(data)
        version = data["environment"]["transformers"]
        key = (version, matrix.device_kind(data))
        if key in kills:
            text += "\n" + kill_table_section(kills[key])
        out = args.output_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.md").write_text(text)
        written = [out / f"{stem}.md"]
        if args.json and not args.results:
            (out / f"{stem}.json").write_text(dumps(data))
            written.append(out / f"{stem}.json")
            if args.kill_table:
                kill_file = out / f"kills-transformers-{version}{'' if key[1] == 'cpu' else '-' + key[1]}.json"
                kill_file.write_text(json.dumps(kills[key], indent=1) + "\n")
                written.append(kill_file)
        failed = suite_failed(data)
        failed_any |= failed
        print(f"wrote {' and '.join(map(str, written))}: suite {'FAILED' if failed else 'passed'} (exit code {data.get('exit_code')})")
    if args.html:
        sources = args.results or sorted(args.output_dir.glob("*.json"))
        print(f"wrote {matrix.write(sources, args.html)} from {len(sources)} JSON files")
    return 1 if failed_any else 0


if __name__ == "__main__":
    sys.exit(main())
