"""A wrapper package that targets one architecture only (GLM-4.7-Flash): the reference wrapper class,
registered for ``Glm4MoeLiteMoE`` and nothing else. ``--impl tests.single_architecture`` is what a third-party
package covering some architectures looks like to the suite (``tests/test_covered_only.py``)."""

from wrappers import CalibrationMoEBlock

CALIBRATION_WRAPPERS = {"Glm4MoeLiteMoE": CalibrationMoEBlock}
