"""Which transformers the project's own tests run under: some tests are written against transformers 5.x
architectures (glm4_moe_lite, fused 3-D experts) that 4.x does not have at all."""

import pytest
import transformers
from packaging.version import Version

TRANSFORMERS_5 = Version(transformers.__version__).major >= 5

requires_transformers_5 = pytest.mark.skipif(
    not TRANSFORMERS_5,
    reason=f"written against transformers 5.x architectures (glm4_moe_lite, fused experts), absent from "
    f"{transformers.__version__}; 4.x blocks are checked by the conformance suite's own runs",
)
