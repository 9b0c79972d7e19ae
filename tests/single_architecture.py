"""A wrapper package that targets one architecture only (Mixtral, present in every supported transformers): the
reference wrapper class, registered for ``MixtralSparseMoeBlock`` and nothing else. ``--impl tests.single_architecture`` is what a third-party
package covering some architectures looks like to the suite (``tests/test_covered_only.py``)."""

from moe_conformance.wrappers import CalibrationMoEBlock

CALIBRATION_WRAPPERS = {"MixtralSparseMoeBlock": CalibrationMoEBlock}
