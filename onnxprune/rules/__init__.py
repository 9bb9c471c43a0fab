"""Per-op channel rules, one module per op family, registered in :mod:`.registry`.

Importing this package registers every rule.
"""

from onnxprune.rules import (  # noqa: F401  (imported for registration)
    concat_split,
    contrib,
    control_flow,
    conv,
    elementwise,
    layout,
    linear,
    normalization,
    pooling,
    quantized,
    recurrent,
    shape_ops,
    spatial,
)
from onnxprune.rules.context import RuleContext
from onnxprune.rules.registry import channel_rule, lookup, registered_ops

__all__ = ["RuleContext", "channel_rule", "lookup", "registered_ops"]
