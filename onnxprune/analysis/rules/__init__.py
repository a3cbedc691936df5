"""Per-op rules, one module per op family; importing this package fills the registry.

See :mod:`onnxprune.analysis.rules.base` for the vocabulary.  An op without a rule is a barrier: the analysis
freezes every channel that reaches it and records why.
"""

from onnxprune.analysis.rules import (contrib, contrib_attention, contrib_nbits, conv, elementwise, generators,
    indexing, layout, linear, normalization, recurrent, reduce, shape_values, spatial)
from onnxprune.analysis.rules.base import Decline, Effects, Link, ParamSlice, Port, Rule, Slot, lookup, registered_ops

__all__ = ["Decline", "Effects", "Link", "ParamSlice", "Port", "Rule", "Slot", "lookup", "registered_ops"]
