"""The compatibility matrix as one static HTML page, built from results files (``pytest conformance
--moe-report``, ``reports/generate.py --json``) and kill tables (``generate.py --kill-table --json``).

    python reports/matrix.py                                  # every reports/*.json -> reports/index.html
    python reports/matrix.py results/*.json -o matrix.html    # any results files

Rows are architectures, columns transformers version x implementation x device. A cell aggregates every check
of that architecture in that run and says its state in words and colour: ok, FAIL, ERROR, not offered, skip
(absent from that transformers), xfail, n/a, or an outcome kind this page does not know (shown as itself). The
reasons are in the cell's title (hover) and, for anything but ok and skip, in numbered footnotes. No server,
no script, no external asset: one file, inline CSS. Only the standard library, so it runs without torch.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPORTS = Path(__file__).resolve().parent


def _load_vocabulary():
    """conformance/vocabulary.py by path: the one definition of the outcome kinds, standard library only, so that
    this page needs nothing installed (the reusable workflow's matrix job)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("moe_conformance_vocabulary", REPORTS.parent / "conformance" / "vocabulary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vocabulary = _load_vocabulary()
NOT_OFFERED = (vocabulary.NOT_OFFERED, "not_offered", "not-offered")
# Cell classes: the legend, in the order a reader should care about them, with the colour each is drawn in.
LEGEND = {
    "ok": ("ok", "#bfe5bf", "every test passed (n/a and known skips aside)"),
    "fail": ("FAIL", "#f28b82", "the implementation broke the contract"),
    "fault": ("fault", "#d93025", "the implementation hung, crashed its process or faulted the device; the architecture's other tests were not judged"),
    "error": ("ERROR", "#fbbc6b", "the harness, a fixture or the original block failed: the implementation was not judged"),
    "notoffered": ("not offered", "#cdb8ea", "the implementation does not offer this (or does not cover the block: uncovered, under --covered-only)"),
    "xfail": ("xfail", "#fff08a", "a known gap recorded in the fixtures (reason in the footnote)"),
    "skip": ("skip", "#dcdcdc", "absent from this transformers version, or a known skip"),
    "na": ("n/a", "#d6e4f0", "the check does not apply"),
    "other": ("other", "#ffffff", "an outcome kind this page does not know, shown as itself"),
    "none": ("not run", "#f7f7f7", "not in this run (a selection, or not in that suite's fixtures)"),
}
FOOTNOTED = ("fault", "fail", "error", "notoffered", "xfail", "other")
MAX_REASONS = 12


@dataclass
class Cell:
    css: str
    label: str
    reasons: list[str] = field(default_factory=list)


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0][:400] if (text or "").strip() else ""


def _reasons(records: list[dict]) -> list[str]:
    """What is not a plain pass, one line per (outcome, message), naming the tests it covers."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in records:
        if r["outcome"] != "passed":
            groups.setdefault((r["outcome"], _first_line(r.get("message", ""))), []).append(r.get("id") or r.get("nodeid", "?"))
    lines = []
    for (outcome, message), ids in groups.items():
        named = ids[0] if len(ids) == 1 else f"{len(ids)} tests ({ids[0]}, ...)"
        lines.append(f"{outcome}: {named}: {message}" if message else f"{outcome}: {named}")
    return lines if len(lines) <= MAX_REASONS else lines[:MAX_REASONS] + [f"... and {len(lines) - MAX_REASONS} more"]


def classify(records: list[dict]) -> Cell:
    """One cell over its tests' outcome kinds, by the vocabulary's one rule (older results files spell "not
    offered" two other ways)."""
    if not records:
        return Cell("none", "", ["not in this run"])
    normal = [{**r, "outcome": vocabulary.NOT_OFFERED if r["outcome"] in NOT_OFFERED else r["outcome"]} for r in records]
    css, label = vocabulary.cell(normal)
    return Cell(css, label, _reasons(records))


def version_key(version: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3]) + (version,)


@dataclass
class Run:
    paths: list[Path]
    data: dict

    @property
    def transformers(self) -> str:
        return self.data["environment"]["transformers"]

    @property
    def impl(self) -> str:
        implementation = self.data.get("implementation")
        if isinstance(implementation, dict):
            return implementation["name"]
        return self.data["environment"]["implementation"].split(" ")[0]  # files before the envelope had a string

    @property
    def device(self) -> str:
        return device_kind(self.data)

    @property
    def key(self) -> tuple:
        return version_key(self.transformers), self.impl, self.device

    @property
    def status(self) -> str:
        summary = self.data.get("summary") or {}
        if "status" in summary:
            return summary["status"]
        red = self.data.get("exit_code") != 0 or self.data.get("other_failures") or any(
            vocabulary.is_red(r["outcome"]) for r in self.data["results"])
        return "failed" if red else "passed"

    def by_arch(self) -> dict[str, list[dict]]:
        archs: dict[str, list[dict]] = {}
        for r in self.data["results"]:
            archs.setdefault(r["arch"], []).append(r)
        return archs


def device_record(device: str) -> dict:
    """The envelope's device record of a file from before the envelope, which named the device in one string
    ('cuda: <model>, CUDA <version>, ...', the plugin's header line): its kind and model."""
    kind, _, detail = device.partition(":")
    return {"name": kind.strip(), "kind": kind.strip(), "model": detail.split(",")[0].strip() or None}


def load(paths: list[Path]) -> tuple[list[Run], list[tuple[Path, dict]]]:
    """Results files and kill tables, told apart by their content."""
    runs: dict[tuple, Run] = {}
    kills = []
    for path in paths:
        data = json.loads(path.read_text())
        if "results" in data and "environment" in data:
            if isinstance(data["environment"].get("device"), str):
                data["environment"]["device"] = device_record(data["environment"]["device"])
            run = Run([path], data)
            runs[run.key] = merge(runs[run.key], run) if run.key in runs else run
        elif "rows" in data and "killed" in data:
            kills.append((path, data))
    kills.sort(key=lambda item: version_key(item[1].get("transformers", "")))
    return [runs[key] for key in sorted(runs)], kills


def device_kind(data: dict) -> str:
    """The kind of device a results file ran on (cpu where it names none)."""
    device = data["environment"].get("device") or {}
    return device.get("kind", "cpu") if isinstance(device, dict) else str(device)


def merge(first: Run, second: Run) -> Run:
    """Two files of one column (a run split over jobs, or selections): one column whose records are both
    files', the later file's record winning for a test both ran; failed if either failed."""
    records = {r.get("nodeid") or r["id"]: r for r in first.data["results"] + second.data["results"]}
    data = {**first.data, "results": list(records.values()),
            "other_failures": (first.data.get("other_failures") or []) + (second.data.get("other_failures") or []),
            "completeness": second.data.get("completeness") or first.data.get("completeness"),
            "exit_code": first.data.get("exit_code") or second.data.get("exit_code"),
            "selection": " | ".join(str(d.get("selection") or "all") for d in (first.data, second.data))}
    data.pop("summary", None)  # recounted from the merged records
    data.pop("duration_s", None)
    return Run(first.paths + second.paths, data)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class Footnotes:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        number = self.texts.index(text) + 1
        return f'<sup><a href="#note-{number}" class="ref">{number}</a></sup>'


def cell_html(cell: Cell, notes: Footnotes | None, where: str) -> str:
    title = "\n".join([where, *cell.reasons]) if cell.reasons else where
    mark = notes.mark(f"{where}: " + "; ".join(cell.reasons)) if notes and cell.css in FOOTNOTED else ""
    return f'<td class="cell {cell.css}" data-state="{cell.css}" title="{esc(title)}"><span class="label">{esc(cell.label)}</span>{mark}</td>'


def _grouped_header(label: str, values: list[str]) -> str:
    """One header row whose equal neighbours share a cell."""
    cells, i = [], 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        cells.append(f'<th colspan="{j - i}">{esc(values[i])}</th>')
        i = j
    return f'<tr><th class="corner">{esc(label)}</th>{"".join(cells)}</tr>'


def column_name(run: Run) -> str:
    return f"transformers {run.transformers} / {run.impl} / {run.device}"


def matrix_table(runs: list[Run], notes: Footnotes) -> str:
    archs = sorted({arch for run in runs for arch in run.by_arch()})
    per_run = [run.by_arch() for run in runs]
    rows, totals = [], [Counter() for _ in runs]
    for arch in archs:
        cells = []
        for i, run in enumerate(runs):
            cell = classify(per_run[i].get(arch, []))
            totals[i][cell.css] += 1
            cells.append(cell_html(cell, notes, f"{arch} on {column_name(run)}"))
        rows.append(f'<tr data-arch="{esc(arch)}"><th class="arch">{esc(arch)}</th>{"".join(cells)}</tr>')
    count_cells = "".join(
        f'<td class="counts" data-column="{esc(column_name(run))}">'
        + " ".join(f'<span data-count="{css}">{LEGEND[css][0]} {totals[i][css]}</span>' for css in LEGEND if totals[i][css])
        + "</td>"
        for i, run in enumerate(runs)
    )
    return (
        '<table class="matrix" id="matrix"><thead>'
        + _grouped_header("transformers", [run.transformers for run in runs])
        + _grouped_header("implementation", [run.impl for run in runs])
        + _grouped_header("device", [run.device for run in runs])
        + f'</thead><tbody>{"".join(rows)}</tbody><tfoot><tr><th class="arch">architectures</th>{count_cells}</tr></tfoot></table>'
    )


def _link(path: Path | None, out_dir: Path, text: str) -> str:
    if path is None or not path.exists():
        return ""
    return f'<a href="{esc(os.path.relpath(path, out_dir))}">{esc(text)}</a>'


def runs_table(runs: list[Run], out_dir: Path) -> str:
    rows = []
    for run in runs:
        data, env = run.data, run.data["environment"]
        counts = (data.get("summary") or {}).get("outcomes") or Counter(r["outcome"] for r in data["results"])
        suite = data.get("suite") or {}
        commit = (suite.get("commit") or "")[:10] + (" (dirty)" if suite.get("dirty") else "")
        device = env.get("device") if isinstance(env.get("device"), dict) else {}
        links = " ".join(filter(None, [link for path in run.paths for link in
                                       (_link(path.with_suffix(".md"), out_dir, "report"), _link(path, out_dir, "JSON"))]))
        status = run.status.upper() if run.status == "failed" else run.status
        rows.append(
            f'<tr data-column="{esc(column_name(run))}"><td>{esc(run.transformers)}</td><td>{esc(run.impl)}</td>'
            f'<td>{esc(run.device)}{" — " + esc(device["model"]) if device.get("model") else ""}</td>'
            f'<td class="status {esc(run.status)}" data-status="{esc(run.status)}">{esc(status)} (exit {esc(data.get("exit_code"))})</td>'
            f'<td>{esc(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))}</td>'
            f'<td>{esc(data.get("selection") or "all")}</td>'
            f'<td>{esc(suite.get("version") or "?")} {esc(commit)}</td>'
            f'<td>torch {esc(env["torch"])}, Python {esc(env["python"])}</td>'
            f'<td>{esc(data.get("started", ""))}{", " + format(data["duration_s"], ".0f") + " s" if "duration_s" in data else ""}</td>'
            f"<td>{links}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("transformers", "implementation", "device", "suite", "tests by outcome",
                                              "selection (-k)", "suite version, commit", "environment", "started, took", ""))
    return f'<table class="runs" id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def other_failures(runs: list[Run]) -> str:
    items = [f"<li><b>{esc(column_name(run))}</b>: <code>{esc(f['nodeid'])}</code> ({esc(f['when'])}): {esc(_first_line(f['message']))}</li>"
             for run in runs for f in run.data.get("other_failures") or []]
    return f'<h2>Failures outside the per-architecture checks</h2><ul id="other-failures">{"".join(items)}</ul>' if items else ""


def _names(names, reasons: dict | None = None) -> str:
    if not names:
        return "none"
    return ", ".join(f'<code title="{esc(reasons[n])}">{esc(n)}</code>' if reasons else f"<code>{esc(n)}</code>" for n in names)


def completeness(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        c = run.data.get("completeness")
        if not c:
            rows.append(f'<tr><td>{esc(column_name(run))}</td><td colspan="5">not run in this selection</td></tr>')
            continue
        excluded = c.get("excluded") or {}
        rows.append(
            f'<tr data-column="{esc(column_name(run))}"><td>{esc(column_name(run))}</td><td>{c["found"]}</td><td>{c["covered"]}</td>'
            f"<td>{len(excluded)}: {_names(sorted(excluded), excluded)}</td>"
            f'<td class="{"bad" if c["no_wrapper"] else ""}">{len(c["no_wrapper"])}: {_names(c["no_wrapper"])}</td>'
            f'<td class="{"bad" if c["no_fixture"] else ""}">{len(c["no_fixture"])}: {_names(c["no_fixture"])}</td></tr>'
        )
    head = "".join(f"<th>{h}</th>" for h in ("run", "MoE classes found", "covered and checked", "excluded (hover: why)",
                                              "uncovered (no wrapper)", "unchecked (no fixture)"))
    return (
        "<h2>MoE classes of each transformers (registry_completeness)</h2><p>Found by scanning the installed "
        "transformers' sources; an uncovered class is one whose calibration would be silently skipped.</p>"
        f'<table id="completeness"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def kill_tables(kills: list[tuple[Path, dict]]) -> str:
    if not kills:
        return ('<h2>Mutation kill table</h2><p id="kills-missing">No kill table among the inputs (write one with '
                "<code>reports/generate.py --kill-table --json</code>).</p>")
    parts = ["<h2>Mutation kill table (tests/test_mutants.py)</h2>"]
    for path, k in kills:
        selection = f", selection <code>-k {esc(k['selection'])}</code>" if k.get("selection") else ""
        body = "".join(f"<tr><td><code>{esc(m)}</code></td><td>{esc(v)}</td></tr>" for m, v in k["rows"])
        parts.append(
            f'<h3>transformers {esc(k.get("transformers", "?"))}{"" if k.get("device", "cpu") == "cpu" else " on " + esc(k["device"])}{selection}</h3><p class="kills-summary">{k["mutants"]} broken wrappers: '
            f'{k["killed"]}/{k["applicable"]} applicable (mutant, architecture) pairs killed'
            f'{", test exit code " + esc(k["exit_code"]) if "exit_code" in k else ""}.</p>'
            f'<table class="kills"><thead><tr><th>mutant</th><th>the check that caught it, its aimed-at check run first (architectures)</th></tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )
    return "".join(parts)


def details(runs: list[Run]) -> str:
    """Per run, the architecture x check table behind the matrix, with the same colours and reasons."""
    parts = ["<h2>Per check</h2>"]
    for run in runs:
        checks = run.data.get("checks") or [{"name": c, "short": c, "contract": c} for c in dict.fromkeys(r["check"] for r in run.data["results"])]
        head = "".join(f'<th title="{esc(c["contract"])}">{esc(c["short"])}</th>' for c in checks)
        rows = []
        for arch, records in sorted(run.by_arch().items()):
            cells = "".join(cell_html(classify([r for r in records if r["check"] == c["name"]]), None, f"{arch} / {c['name']}") for c in checks)
            rows.append(f'<tr><th class="arch">{esc(arch)}</th>{cells}</tr>')
        parts.append(f"<details><summary>{esc(column_name(run))}</summary><table class=\"checks\"><thead><tr><th>architecture</th>"
                     f'{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></details>')
    return "".join(parts)


def findings(out_dir: Path, folder: Path) -> str:
    files = sorted(p for p in folder.glob("*") if p.suffix in (".md", ".html", ".txt")) if folder.is_dir() else []
    if not files:
        return ""
    items = "".join(f"<li>{_link(p, out_dir, p.stem)}</li>" for p in files)
    return f'<h2>Findings</h2><ul id="findings">{items}</ul>'


COST = REPORTS / "cost"  # benchmarks/bench_cost.py's results (one JSON per implementation and environment)
COST_IMPLS = ("reference", "llmcompressor", "defuser", "auto_round")


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def cost_table(folder: Path, out_dir: Path) -> str:
    """The calibration cost scoreboard (``reports/cost/``): per implementation run and layer, a column group each
    for the conversion, the all-experts and routed forwards per token count, and the error; the device, torch
    and transformers on every row."""
    runs = []
    for path in sorted(folder.glob("cost-*.json")) if folder.is_dir() else []:
        try:
            runs.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    if not runs:
        return ""
    runs.sort(key=lambda pr: (COST_IMPLS.index(pr[1]["impl"]) if pr[1]["impl"] in COST_IMPLS else 99, pr[1]["transformers"]))
    tokens = sorted({t for _, run in runs for row in run["rows"] for t in row["tokens"]}, key=int)
    groups = [("run", 4), ("conversion (x expert bytes)", 3)] + [(f"all-experts, {t} tokens", 3) for t in tokens] \
        + [(f"routed, {t} tokens", 2) for t in tokens] + [("rel. error", 2)]
    sub = ["implementation", "transformers · torch", "device", "layer", "peak", "kept", "s"] \
        + ["ms", "% peak", "x seeds"] * len(tokens) + ["ms", "x grouped_mm"] * len(tokens) + ["all", "routed"]
    colgroups = "".join(f'<colgroup span="{n}" class="cost-group"></colgroup>' for _, n in groups)
    head = ("<tr>" + "".join(f'<th colspan="{n}" scope="colgroup">{esc(label)}</th>' for label, n in groups) + "</tr><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in sub) + "</tr>")
    rows = []
    for path, run in runs:
        label = f"{run['impl']} {run.get('project_version') or ''}".strip()
        env = f"{run['transformers']} · torch {run['torch']}"
        for row in run["rows"]:
            cells = [label, env, run["device"], row["layer"], _num(row.get("conversion peak x"), ".2f"),
                     _num(row.get("conversion kept x"), ".2f"), _num(row.get("conversion s"), ".2f")]
            for t in tokens:
                c = row["tokens"].get(t, {})
                cells += [_num(c.get("all-experts ms"), ".2f"), _num(c.get("all-experts % of peak"), ".1f"), _num(c.get("all-experts x seeds"), ".2f")]
            for t in tokens:
                c = row["tokens"].get(t, {})
                cells += [_num(c.get("routed ms"), ".2f"), _num(c.get("routed x grouped_mm"), ".1f")]
            for mode in ("all-experts", "routed"):
                errs = [c[f"{mode} rel.err"] for c in row["tokens"].values() if c.get(f"{mode} rel.err") is not None]
                cells.append(_num(max(errs) if errs else None, ".1e"))
            notes = "; ".join(row.get("notes", []))
            rows.append(f'<tr data-impl="{esc(run["impl"])}" data-layer="{esc(row["layer"])}" title="{esc(notes)}">'
                        + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    links = " ".join(_link(path, out_dir, path.name) for path, _ in runs)
    readme = _link(folder / "README.md", out_dir, "scoreboard and notes")
    return (f'<h2 id="cost">Calibration cost (GPU, bf16, real layer sizes)</h2><p>benchmarks/bench_cost.py; '
            f'{readme} {links}. x seeds: the seeds&#39; per-expert loop&#39;s time over this one; x grouped_mm: the time '
            f"over the original block&#39;s own grouped_mm forward; % peak: the matmul FLOPs at the run&#39;s 8192³ bf16 rate.</p>"
            f'<table class="cost" id="cost-table">{colgroups}<thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')


# Inlined into the page: one file, nothing fetched.
CSS = (REPORTS / "matrix.css").read_text() + "".join(f"td.{css}, .legend span.{css} {{ background: {colour}; }}\n" for css, (_, colour, _) in LEGEND.items())


def page(runs: list[Run], kills: list[tuple[Path, dict]], out_dir: Path, findings_dir: Path) -> str:
    notes = Footnotes()
    grid = matrix_table(runs, notes)
    failed = [column_name(run) for run in runs if run.status == "failed"]
    verdict = (f'<p class="verdict failed" id="verdict">FAILED: {len(failed)} of {len(runs)} runs ({esc("; ".join(failed))})</p>'
               if failed else f'<p class="verdict passed" id="verdict">Passed: every run ({len(runs)}).</p>')
    partial = [run for run in runs if run.data.get("selection")]
    if partial:  # a green selection is not a green suite: say so beside the verdict
        verdict += (f'<p class="selection-note" id="selection-note">{len(partial)} of {len(runs)} runs are selections '
                    "(<code>-k</code>, in the table below), not the whole suite.</p>")
    legend = "".join(f'<span class="{css}" title="{esc(why)}">{esc(label)}: {esc(why)}</span>' for css, (label, _, why) in LEGEND.items())
    footnotes = "".join(f'<li id="note-{i}">{esc(text)}</li>' for i, text in enumerate(notes.texts, 1))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>moe-conformance: compatibility matrix</title>
<style>{CSS}</style></head><body>
<h1>MoE calibration wrappers: compatibility matrix</h1>
{verdict}
<p>Generated by <code>reports/matrix.py</code> from {len(runs)} run(s). A cell aggregates every check, variant,
mode and dtype of that architecture in that run; hover a cell for its reasons.</p>
<p class="legend">{legend}</p>
{runs_table(runs, out_dir)}
{other_failures(runs)}
{grid}
{'<h2>Notes</h2><ol id="footnotes">' + footnotes + '</ol>' if footnotes else ''}
{completeness(runs)}
{kill_tables(kills)}
{details(runs)}
{cost_table(COST, out_dir)}
{findings(out_dir, findings_dir)}
</body></html>
"""


def write(paths: list[Path], out: Path, findings_dir: Path = REPORTS / "findings") -> Path:
    runs, kills = load(paths)
    if not runs:
        raise SystemExit(f"no results files among {[str(p) for p in paths]}")
    out.write_text(page(runs, kills, out.resolve().parent, findings_dir))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="results and kill-table JSON files (default: reports/*.json)")
    parser.add_argument("-o", "--output", type=Path, default=REPORTS / "index.html", help="the page (default reports/index.html)")
    parser.add_argument("--findings", type=Path, default=REPORTS / "findings", help="folder of findings to link (default reports/findings)")
    args = parser.parse_args()
    out = write(args.files or sorted(REPORTS.glob("*.json")), args.output, args.findings)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
