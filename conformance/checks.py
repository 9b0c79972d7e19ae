"""The checks as plain functions, under the names earlier versions exported from here (like
``torch.library.opcheck``). They now live by concern:

- ``verdicts``: ``ConformanceFailure``, ``HarnessError``, ``NotApplicable``, ``TOLERANCE``, ``compare_outputs``;
- ``setting``: ``Setting``, ``MODES`` and the building of blocks and models for a setting;
- ``instruments``: the hooks that observe the original's routing and the wrapper's expert Linears;
- ``oracle``: the expected expert weights, per storage layout; ``snapshots``: model state snapshots;
- ``checks_routing``, ``checks_properties``, ``checks_structure``, ``checks_lifecycle``, ``checks_model``,
  ``smoke``: the checks, by contract area; ``suite``: ``CHECKS`` and ``run_checks``.

Every check is called ``check_<name>(case, impl, setting)``.
"""

from .checks_lifecycle import check_no_side_effects, check_partial_conversion, check_restore_semantics
from .checks_model import check_whole_model, model_output
from .checks_properties import check_routing_properties
from .checks_routing import check_all_experts_observed, check_experts_implementation, check_output_matches, check_routed_tokens_only
from .checks_structure import check_covered, check_experts_are_linear
from .instruments import Expert, Routing, find_experts, observe_original, record_linear_inputs, recording_routing
from .setting import MODES, Setting
from .smoke import check_calibration_smoke
from .verdicts import TOLERANCE, ConformanceFailure, HarnessError, NotApplicable, compare_outputs

__all__ = [
    "MODES",
    "TOLERANCE",
    "ConformanceFailure",
    "Expert",
    "HarnessError",
    "NotApplicable",
    "Routing",
    "Setting",
    "check_all_experts_observed",
    "check_calibration_smoke",
    "check_covered",
    "check_experts_are_linear",
    "check_experts_implementation",
    "check_no_side_effects",
    "check_output_matches",
    "check_partial_conversion",
    "check_restore_semantics",
    "check_routed_tokens_only",
    "check_routing_properties",
    "check_whole_model",
    "compare_outputs",
    "find_experts",
    "model_output",
    "observe_original",
    "record_linear_inputs",
    "recording_routing",
]
