"""The property-based check: hypothesis draws routing configurations, shapes and seeds, and the routing checks'
contract must hold for every draw. Also the hypothesis profiles the suite runs it under."""

from __future__ import annotations

import os
from typing import Any

from ..cases.arch import ArchCase
from ..cases.setting import MODES, Setting, build_block
from ..implementations.protocol import Implementation
from .routing import wrap_and_observe
from .verdicts import compare_outputs

__all__ = ["check_routing_properties", "register_hypothesis_profiles"]


def register_hypothesis_profiles() -> None:
    """``ci`` (derandomized, so a CI run cannot flake) and ``dev`` (more examples, random); the one named by
    ``HYPOTHESIS_PROFILE`` (default ``ci``) is loaded unless another profile than hypothesis' own default is
    already loaded (a test module or user that chose one keeps it). Called by the check itself, when it first
    runs: hypothesis is imported only where it is used."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # a test extra: without it only routing_properties cannot run
        return
    common = {
        "deadline": None,
        "report_multiple_bugs": False,  # one ConformanceFailure, shrunk, rather than an exception group
        "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    }
    settings.register_profile("ci", max_examples=10, derandomize=True, print_blob=True, **common)
    settings.register_profile("dev", max_examples=100, **common)
    if settings.get_current_profile_name() == "default":
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def check_routing_properties(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """Hypothesis over the fixture's routing ``knobs`` (any combination), any small shape and any seed: the
    draw becomes a setting of its own (``overrides``, ``seed``) per mode, and every expert observed on every
    token, routed tokens only, and matching outputs must hold for it."""
    from hypothesis import given
    from hypothesis import strategies as st

    register_hypothesis_profiles()

    @st.composite
    def configurations(draw):
        overrides: dict[str, Any] = {}
        for knob, values in sorted(case.knobs.items()):
            value = draw(st.sampled_from(values))
            overrides.update(value if isinstance(value, dict) else {knob: value})
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)))
        return overrides, shape, draw(st.integers(0, 2**16))

    @given(configurations())
    def holds(drawn):
        overrides, shape, seed = drawn
        for mode in MODES:
            # A fresh block per mode: a wrapper may take over (or spoil) the original it was built from.
            drawn_setting = setting.replace(mode=mode, overrides=overrides, seed=seed)
            run = build_block(case, drawn_setting, shape)
            want, got = wrap_and_observe(case, impl, run, drawn_setting.calibrate_all_experts)
            compare_outputs(got, want, run.label)

    holds()
