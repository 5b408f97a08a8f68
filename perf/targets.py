"""A benchmark's targets: ``name -> (comparison, bound)``, judged the same way by every bench.

``(">=", b)`` / ``("<=", b)``: the value against a bound; ``("within", d)``: a ratio within
``d`` of 1. A target with no value is not judged (its bench says why it has none).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Targets", "meets", "missed", "targets_doc"]

Targets = dict[str, tuple[str, float]]


def meets(targets: Targets, name: str, value: float) -> bool:
    """Whether ``value`` meets target ``name``."""
    op, bound = targets[name]
    if op == ">=":
        return value >= bound
    if op == "<=":
        return value <= bound
    if op == "within":
        return abs(value - 1.0) <= bound
    raise ValueError(f"target {name}: unknown comparison {op!r}")


def missed(targets: Targets, values: dict[str, float]) -> list[str]:
    """The targets among ``values`` that are missed, in the targets' order."""
    return [name for name in targets if name in values and not meets(targets, name, values[name])]


def targets_doc(targets: Targets) -> dict[str, dict[str, Any]]:
    """The targets as a report's JSON writes them."""
    return {k: {"op": op, "bound": b} for k, (op, b) in targets.items()}
