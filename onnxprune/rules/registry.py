"""The channel-rule registry: one rule per (domain, op type, opset range).

A rule is a function ``rule(node, ctx)`` that declares, through the
:class:`~onnxprune.rules.context.RuleContext`, how the node's input and output dims relate.
Registering an op twice for overlapping opsets is an error, never a silent overwrite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from onnxprune.rules.context import RuleContext

Rule = Callable[[ir.Node, RuleContext], None]


@dataclass(frozen=True)
class _Entry:
    first: int
    last: int | None
    rule: Rule


_RULES: dict[tuple[str, str], list[_Entry]] = {}


def _normal_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def channel_rule(
    *op_types: str, domain: str = "", opsets: tuple[int, int | None] = (1, None)
) -> Callable[[Rule], Rule]:
    """Register the decorated function as the channel rule of ``op_types`` in ``domain``."""
    first, last = opsets

    def register(rule: Rule) -> Rule:
        for op_type in op_types:
            entries = _RULES.setdefault((_normal_domain(domain), op_type), [])
            for entry in entries:
                if (last is None or entry.first <= last) and (
                    entry.last is None or first <= entry.last
                ):
                    raise ValueError(
                        f"channel rule for {domain or 'ai.onnx'}::{op_type} registered twice "
                        f"({entry.rule.__name__} and {rule.__name__})"
                    )
            entries.append(_Entry(first, last, rule))
        return rule

    return register


def lookup(domain: str, op_type: str, opset: int) -> Rule | None:
    """The rule for ``op_type`` at ``opset``, or None when no rule covers it."""
    for entry in _RULES.get((_normal_domain(domain), op_type), []):
        if entry.first <= opset and (entry.last is None or opset <= entry.last):
            return entry.rule
    return None


def registered_ops() -> list[str]:
    """Every registered op as ``domain::op`` (``ai.onnx`` for the default domain)."""
    return sorted(f"{d or 'ai.onnx'}::{op}" for d, op in _RULES)
