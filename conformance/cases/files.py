"""The fixture files: ``fixtures/*.toml`` read, checked against the schema, and turned into ``ArchCase``s.

The schema is ``ArchCase`` itself: an entry's keys are its fields (less those marked ``fixture_key=False``),
the required ones those without a default. A key the schema does not know is an error, not ignored: a misspelt
oracle hint (``expert_layuot``) would otherwise switch the hint off and let a check compare against the wrong
layout. Every problem is one line naming the file, the entry and the key (``FixtureError``); the pytest plugin
reports it before any test runs. Derived fixtures (``derived_fixtures.py``) are built in code and bypass this.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from pathlib import Path
from typing import Any

from .arch import ArchCase

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["FixtureError", "SECTIONS", "fixture_keys", "load_fixture_cases", "read_fixtures", "required_keys"]

# The top-level tables a fixture file may hold (fixtures/README.md).
SECTIONS = ("architectures", "presets", "variant_sets", "knob_sets", "not_calibration_targets")
# The keys of a scoped skip / xfail table; `reason` is required (`dtype` and `device` take one name or a list).
GAP_KEYS = ("reason", "transformers", "dtype", "device")


class FixtureError(ValueError):
    """A fixture file that cannot be used; the message is one line naming the file, the entry and the key."""


def fixture_keys() -> dict[str, dataclasses.Field]:
    """The keys an ``[architectures.*]`` entry may have: ``ArchCase``'s fields, less the ones that are not
    written in a file (the entry's name, where the case came from)."""
    return {f.name: f for f in dataclasses.fields(ArchCase) if f.metadata.get("fixture_key", True)}


def required_keys() -> list[str]:
    missing = dataclasses.MISSING
    return [name for name, f in fixture_keys().items() if f.default is missing and f.default_factory is missing]


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _enclosing_table(text: str, line: int) -> str:
    """The ``[table]`` header in force at ``line`` (1-based) of a TOML text, or '' before any."""
    headers = [m.group(1) for m in re.finditer(r"^\s*(\[[^\]\n]+\])", "\n".join(text.splitlines()[:line]), re.MULTILINE)]
    return f" in {headers[-1]}" if headers else ""


def _parse(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        entry = _enclosing_table(text, int(where.group(1))) if where else ""
        raise FixtureError(f"{_shown(path)}: TOML syntax error{entry}: {exc}") from None


def read_fixtures(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], Path]]:
    """Every ``*.toml`` in ``folder``, merged table by table, and the file each ``(section, name)`` came from.
    A name defined in two places, or a section the schema does not know, is an error."""
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise FixtureError(f"no fixture files (*.toml) in {folder}; set MOE_CONFORMANCE_FIXTURES to the fixtures folder")
    merged: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, str], Path] = {}
    for path in files:
        for section, entries in _parse(path).items():
            if section not in SECTIONS:
                raise FixtureError(f"{_shown(path)}: unknown table [{section}]{_did_you_mean(section, SECTIONS)}; a fixture file holds {', '.join(SECTIONS)}")
            for name, value in entries.items():
                if (section, name) in origin:
                    raise FixtureError(f"[{section}.{name}] is defined in both {_shown(origin[section, name])} and {_shown(path)}")
                origin[section, name] = path
                merged.setdefault(section, {})[name] = value
    return merged, origin


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Entry:
    """One ``[architectures.<name>]`` entry being checked, for messages that point at it."""

    def __init__(self, name: str, path: Path):
        self.name, self.where = name, f"{_shown(path)} [architectures.{name}]"

    def error(self, key: str, problem: str) -> FixtureError:
        return FixtureError(f"{self.where}: key {key!r}: {problem}")


def _named_set(data: dict, section: str, value: Any, entry: _Entry, key: str) -> Any:
    """A ``variants`` / ``knobs`` value: a table as written, or the name of a shared ``[<section>.*]`` table."""
    if not isinstance(value, str):
        return value
    if value not in data.get(section, {}):
        raise entry.error(key, f"no [{section}.{value}] in any fixture file{_did_you_mean(value, data.get(section, {}))}")
    return data[section][value]


def _check_gaps(entry: _Entry, key: str, gaps: Any) -> None:
    if not isinstance(gaps, dict):
        raise entry.error(key, "expected a table {check name or \"*\" = reason or {reason, transformers, dtype, device}}")
    for check, gap in gaps.items():
        if isinstance(gap, str):
            continue
        if not isinstance(gap, dict) or "reason" not in gap:
            raise entry.error(f"{key}.{check}", "expected a reason, or a table with a reason")
        unknown = [k for k in gap if k not in GAP_KEYS]
        if unknown:
            raise entry.error(f"{key}.{check}", f"unknown key {unknown[0]!r}{_did_you_mean(unknown[0], GAP_KEYS)}; allowed: {', '.join(GAP_KEYS)}")


def _case(data: dict, name: str, raw: Any, path: Path) -> ArchCase:
    entry = _Entry(name, path)
    if not isinstance(raw, dict):
        raise FixtureError(f"{entry.where}: an entry must be a table of keys, not {type(raw).__name__}")
    keys = fixture_keys()
    for key in raw:
        if key not in keys:
            raise entry.error(key, f"unknown key{_did_you_mean(key, keys)}; the keys are ArchCase's fields (fixtures/README.md)")
    for key in required_keys():
        if key not in raw:
            raise entry.error(key, "missing (required: " + ", ".join(required_keys()) + ")")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        default = keys[key].default
        if isinstance(default, tuple):  # written as an array, held as a tuple (cases are frozen and hashable)
            if not isinstance(value, list):
                raise entry.error(key, f"expected an array, got {value!r}")
            value = tuple(value)
        values[key] = value
    presets = data.get("presets", {})
    config: dict[str, Any] = {}
    for preset in values.get("presets", ()):
        if preset not in presets:
            raise entry.error("presets", f"no [presets.{preset}] in any fixture file{_did_you_mean(preset, presets)}")
        config.update(presets[preset])
    values["config"] = {**config, **values.get("config", {})}
    if "variants" in values:
        values["variants"] = _named_set(data, "variant_sets", values["variants"], entry, "variants")
        if "default" not in values["variants"]:
            raise entry.error("variants", "no 'default' variant (default = {} runs the entry's config as it is)")
    if "knobs" in values:
        values["knobs"] = _named_set(data, "knob_sets", values["knobs"], entry, "knobs")
    for key in ("skip", "xfail"):
        if key in values:
            _check_gaps(entry, key, values[key])
    return ArchCase(model_type=name, **values)


def load_fixture_cases(folder: Path) -> tuple[list[ArchCase], frozenset[str]]:
    """The hand-written cases of ``folder``, and the class names it lists as not calibration targets."""
    data, origin = read_fixtures(folder)
    cases = [_case(data, name, raw, origin["architectures", name]) for name, raw in data.get("architectures", {}).items()]
    return cases, frozenset(data.get("not_calibration_targets", {}))
