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

# transformers 5.25 added the structures some mutants break: an experts class wrapping the decorated dispatch
# (Ergo), weight-0 routes sent to real experts (LongCat-Flash's dummy rows).
TRANSFORMERS_5_25 = Version(transformers.__version__) >= Version("5.25.0")

requires_transformers_5_25 = pytest.mark.skipif(
    not TRANSFORMERS_5_25,
    reason=f"written against transformers 5.25 structures (Ergo's wrapped dispatch, LongCat's weight-0 routes), absent "
    f"from {transformers.__version__}",
)
