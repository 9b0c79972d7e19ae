"""The compatibility page (reports/matrix.py) as a browser shows it: headless Chromium renders it, takes a
screenshot, and the rendered DOM — with each cell's computed background — holds the cells, counts and reasons
of the results it was built from. The committed reports/index.html is what its committed JSON renders to.

Chromium comes from Debian's package (`apt-get install chromium`; .ci/run installs it and fails without it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "reports"
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
# Skipped, saying why, only outside CI: in CI (CI=true, as .ci/run runs) a missing browser fails the test.
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="no chromium on PATH (Debian: apt-get install chromium); .ci/run installs it")


def _matrix_module():
    spec = importlib.util.spec_from_file_location("reports_matrix", REPORTS / "matrix.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


matrix = _matrix_module()


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:  # reached only in CI (needs_chromium skips elsewhere): .ci/run installs it
        pytest.fail("no chromium on PATH in CI: .ci/run must install it (apt-get install chromium)")
    # --no-sandbox: CI runs as root; a profile of its own so that concurrent runs do not share a lock
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


class Element:
    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag, self.attrs, self.children, self.parts = tag, attrs, [], []

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and all(child.attrs.get(k.rstrip("_")) == v for k, v in attrs.items()):
                found.append(child)
            found += child.find_all(tag, **attrs)
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} {attrs}>"
        return found[0]


class _DomBuilder(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "wbr", "source", "area", "base"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        self.stack[-1].parts.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        while len(self.stack) > 1:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data):
        self.stack[-1].parts.append(data)


# Records each cell's and status cell's computed background into the DOM, where --dump-dom can see it: the
# colours a reader sees, not the stylesheet's text. Added to a copy of the page only; the page has no script.
_COMPUTED_STYLES = """<script>
for (const el of document.querySelectorAll("td.cell, td.status, .legend span"))
  el.setAttribute("data-computed-bg", getComputedStyle(el).backgroundColor);
</script>"""


def rendered_dom(tmp_path: Path, page: Path) -> Element:
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", _COMPUTED_STYLES + "</body>"))
    builder = _DomBuilder()
    builder.feed(_chromium(tmp_path, "--dump-dom", probe.as_uri()).stdout)
    return builder.root


def screenshot(tmp_path: Path, page: Path, name: str) -> Path:
    folder = Path(os.environ.get("MOE_PAGE_SCREENSHOTS", tmp_path))  # set it to keep the PNGs and look at them
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / name
    _chromium(tmp_path, "--window-size=1400,1000", f"--screenshot={png}", page.as_uri())
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 1400, "not a 1400-px-wide PNG"
    assert len(data) > 20_000, f"{png}: {len(data)} bytes; a blank page compresses to almost nothing"
    return png


def _record(arch, check, outcome, message="", variant="default", mode=None, dtype=None):
    test_id = "-".join(p for p in (arch, check, variant if variant != "default" else None, mode, dtype) if p)
    return {"id": test_id, "arch": arch, "check": check, "variant": variant, "mode": mode, "dtype": dtype,
            "device": "cpu", "outcome": outcome, "message": message, "fixture": "hand",
            "nodeid": f"conformance/test_conformance.py::test_conformance[{test_id}]"}


def _results(transformers: str, impl: str, device: str, records: list[dict], exit_code: int, completeness=None, other=()):
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r["outcome"]] = kinds.get(r["outcome"], 0) + 1
    red = exit_code != 0 or other or any(r["outcome"] in ("failed", "error") for r in records)
    return {
        "schema": "moe-conformance/results", "schema_version": 1,
        "suite": {"name": "moe-conformance", "version": "0.1.0", "commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False, "source": "git"},
        "implementation": {"spec": impl, "name": impl, "version": None, "description": f"{impl} (2 wrappers, own context)"},
        "environment": {"implementation": f"{impl} (2 wrappers, own context)", "transformers": transformers, "torch": "2.13.0",
                        "python": "3.11.7", "platform": "Linux", "device": {"name": device, "kind": device, "model": "Test CPU"}},
        "started": "2026-11-27T00:00:00+00:00", "duration_s": 12.0, "exit_code": exit_code, "selection": None,
        "summary": {"status": "failed" if red else "passed", "total": len(records), "outcomes": kinds, "other_failures": len(other)},
        "checks": [{"name": "covered", "short": "covered", "contract": "a wrapper exists"},
                   {"name": "output_matches", "short": "output", "contract": "outputs equal"},
                   {"name": "whole_model", "short": "model", "contract": "logits equal"}],
        "completeness": completeness, "other_failures": list(other), "results": records,
    }


DEVICE_MESSAGE = "gamma-output_matches-all_experts-float16: DEVICE: CUDA error: device-side assert triggered"
XFAIL_REASON = "expected failure (a looped block is fed its first call's input): logits differ by 1.22"
FAIL_MESSAGE = "beta-output_matches-default-all_experts-float32, shape (2, 5): max error 0.3 exceeds 1e-05 (expert 3)"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    """Three columns (4.57.6 reference, 5.24.0 reference, 5.24.0 mypkg on cuda) with every kind of cell."""
    folder = tmp_path_factory.mktemp("page")
    old = [_record("alpha", "covered", "passed"), _record("alpha", "output_matches", "passed", mode="all_experts", dtype="float32"),
           _record("beta", "covered", "skipped", "beta: BetaMoE is not in the installed transformers 4.57.6")]
    new = [_record("alpha", "covered", "passed"), _record("alpha", "whole_model", "xfail", XFAIL_REASON, mode="all_experts", dtype="bfloat16"),
           _record("beta", "covered", "passed"), _record("beta", "output_matches", "failed", FAIL_MESSAGE, mode="all_experts", dtype="float32"),
           _record("beta", "output_matches", "passed", mode="routed", dtype="float32"),
           _record("gamma", "covered", "error", "gamma-covered: harness error KeyError: 'n_group'"),
           _record("delta", "covered", "n/a", "not applicable: no experts dispatch")]
    theirs = [_record("alpha", "covered", "not offered", "mypkg offers no wrapper for AlphaMoE"),
              _record("beta", "covered", "flaky", "a kind this page does not know"),
              _record("gamma", "covered", "passed"),
              _record("gamma", "output_matches", "device", DEVICE_MESSAGE, mode="all_experts", dtype="float16"),
              {**_record("gamma", "whole_model", "skipped", "gamma: not judged: the implementation faulted the device in "
                         "gamma-output_matches-all_experts-float16"), "not_judged": True},
              {**_record("delta", "covered", "skipped", "delta: uncovered: calibration would be silently skipped"), "uncovered": True},
              {**_record("delta", "output_matches", "skipped", "delta: uncovered: calibration would be silently skipped"), "uncovered": True}]
    completeness = {"transformers": "5.24.0", "found": 5, "covered": 3, "excluded": {"VitPoseBackboneMoeMLP": "experts chosen by a dataset index"},
                    "no_wrapper": ["NewMoE"], "no_fixture": ["NewMoE"], "derived": {}}
    other = [{"nodeid": "conformance/test_completeness.py::test_registry_completeness", "when": "call", "message": "AssertionError: 1 MoE classes"}]
    files = {
        "reference-transformers-4.57.6.json": _results("4.57.6", "reference", "cpu", old, 0),
        "reference-transformers-5.24.0.json": _results("5.24.0", "reference", "cpu", new, 1, completeness, other),
        "mypkg-transformers-5.24.0-cuda.json": _results("5.24.0", "mypkg", "cuda", theirs, 1),
        "kills-transformers-5.24.0.json": {"schema": "moe-conformance/kill-table", "transformers": "5.24.0", "exit_code": 0, "selection": None,
                                           "mutants": 2, "killed": 3, "applicable": 3,
                                           "rows": [["drift_1e_4", "output_matches: 2"], ["zeros", "all_experts_observed: 1"]]},
    }
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))
    (folder / "findings").mkdir()
    (folder / "findings" / "llmcompressor-restore.md").write_text("# restore() returns the wrapper\n")
    page = folder / "index.html"
    run = subprocess.run([sys.executable, str(REPORTS / "matrix.py"), *map(str, sorted(folder.glob("*.json"))), "-o", str(page),
                          "--findings", str(folder / "findings")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return folder, page


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@needs_chromium
def test_the_browser_shows_every_kind_of_cell_with_its_colour_and_reason(synthetic, tmp_path):
    _, page = synthetic
    dom = rendered_dom(tmp_path, page)
    grid = dom.one("table", id="matrix")
    heads = [th.text for th in grid.find_all("thead")[0].find_all("th")]
    assert heads[:3] == ["transformers", "4.57.6", "5.24.0"], "equal transformers versions share one header cell"
    assert "mypkg" in heads and "cuda" in heads
    rows = {tr.attrs["data-arch"]: tr.find_all("td") for tr in grid.find_all("tr") if "data-arch" in tr.attrs}
    assert sorted(rows) == ["alpha", "beta", "delta", "gamma"] and all(len(cells) == 3 for cells in rows.values())
    # columns: 4.57.6/reference/cpu, 5.24.0/mypkg/cuda, 5.24.0/reference/cpu (sorted by version, implementation)
    expected = {
        ("alpha", 0): ("ok", "ok"), ("alpha", 1): ("notoffered", "not offered"), ("alpha", 2): ("xfail", "xfail 1/2"),
        ("beta", 0): ("skip", "skip"), ("beta", 1): ("other", "flaky 1/1"), ("beta", 2): ("fail", "FAIL 1/3"),
        ("gamma", 0): ("none", ""), ("gamma", 1): ("fault", "DEVICE 1/3"), ("gamma", 2): ("error", "ERROR 1/1"),
        ("delta", 1): ("notoffered", "uncovered"), ("delta", 2): ("na", "n/a"),
    }
    for (arch, column), (state, label) in expected.items():
        cell = rows[arch][column]
        assert (cell.attrs["data-state"], cell.one("span", class_="label").text) == (state, label), (arch, column)
        assert cell.attrs["data-computed-bg"] == _rgb(matrix.LEGEND[state][1]), (arch, column, cell.attrs["data-computed-bg"])
    # the reasons: on hover (title) and, but for ok and skip, in a footnote the cell links to
    assert XFAIL_REASON in rows["alpha"][2].attrs["title"]
    assert "BetaMoE is not in the installed transformers 4.57.6" in rows["beta"][0].attrs["title"]
    assert "mypkg offers no wrapper for AlphaMoE" in rows["alpha"][1].attrs["title"]
    assert "uncovered: calibration would be silently skipped" in rows["delta"][1].attrs["title"]
    notes = dom.one("ol", id="footnotes").text
    assert FAIL_MESSAGE in notes and XFAIL_REASON in notes and "harness error KeyError" in notes and DEVICE_MESSAGE in notes
    assert rows["beta"][2].one("a").attrs["href"].startswith("#note-")
    # the counts under each column, the runs' verdicts, and the page's
    counts = [td.text for td in grid.find_all("td", class_="counts")]
    assert counts == ["ok 1 skip 1 not run 2", "fault 1 not offered 2 other 1", "FAIL 1 ERROR 1 xfail 1 n/a 1"], counts
    statuses = [td.attrs["data-status"] for td in dom.one("table", id="runs").find_all("td") if "data-status" in td.attrs]
    assert statuses == ["passed", "failed", "failed"]
    assert dom.one(id="verdict").text.startswith("FAILED: 2 of 3 runs")


@needs_chromium
def test_the_page_shows_completeness_failures_kills_and_findings(synthetic, tmp_path):
    folder, page = synthetic
    dom = rendered_dom(tmp_path, page)
    completeness = dom.one("table", id="completeness").text
    assert "NewMoE" in completeness and "VitPoseBackboneMoeMLP" in completeness and "not run in this selection" in completeness
    assert "test_registry_completeness" in dom.one("ul", id="other-failures").text
    assert "3/3 applicable (mutant, architecture) pairs killed" in dom.find_all("p", class_="kills-summary")[0].text
    assert "drift_1e_4" in dom.find_all("table", class_="kills")[0].text
    link = dom.one("ul", id="findings").one("a")
    assert (page.parent / link.attrs["href"]).resolve() == (folder / "findings" / "llmcompressor-restore.md").resolve()
    assert not [e for e in dom.find_all() if e.tag in ("link", "img", "iframe") or (e.tag == "script" and "src" in e.attrs)], "no external assets"
    screenshot(tmp_path, page, "synthetic-page.png")


def test_the_committed_page_is_what_the_committed_results_render_to():
    inputs = sorted(REPORTS.glob("*.json"))
    assert any("results" in json.loads(p.read_text()) for p in inputs), "reports/ holds no results JSON"
    runs, kills = matrix.load(inputs)
    fresh = matrix.page(runs, kills, REPORTS, REPORTS / "findings")
    assert (REPORTS / "index.html").read_text() == fresh, "reports/index.html is stale: python reports/generate.py --html reports/index.html reports/*.json"


@needs_chromium
def test_the_committed_page_renders_its_results(tmp_path):
    runs, _ = matrix.load(sorted(REPORTS.glob("*.json")))
    dom = rendered_dom(tmp_path, REPORTS / "index.html")
    grid = dom.one("table", id="matrix")
    archs = {arch for run in runs for arch in run.by_arch()}
    rows = [tr for tr in grid.find_all("tr") if "data-arch" in tr.attrs]
    assert {tr.attrs["data-arch"] for tr in rows} == archs and all(len(tr.find_all("td")) == len(runs) for tr in rows)
    for column, run in enumerate(runs):
        cells = [tr.find_all("td")[column] for tr in rows]
        failing = {r["arch"] for r in run.data["results"] if r["outcome"] == "failed"}
        assert {tr.attrs["data-arch"] for tr, c in zip(rows, cells) if c.attrs["data-state"] == "fail"} == failing
    screenshot(tmp_path, REPORTS / "index.html", "committed-page.png")
