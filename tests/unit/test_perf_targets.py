"""tritonllm.perf.targets: how every benchmark judges its targets."""

from __future__ import annotations

import pytest

from tritonllm.perf import targets as T

TARGETS: T.Targets = {"ratio": (">=", 0.9), "added_ms": ("<=", 3.0), "agree": ("within", 0.15)}


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("ratio", 0.9, True), ("ratio", 0.89, False), ("added_ms", 3.0, True),
    ("added_ms", 3.1, False), ("agree", 1.15, True), ("agree", 0.84, False),
])
def test_meets_each_comparison_at_its_bound(name: str, value: float, ok: bool) -> None:
    assert T.meets(TARGETS, name, value) is ok


def test_missed_judges_only_the_values_given_in_target_order() -> None:
    assert T.missed(TARGETS, {"agree": 2.0, "ratio": 0.1}) == ["ratio", "agree"]
    assert T.missed(TARGETS, {"not_a_target": 0.0}) == []
    assert T.targets_doc(TARGETS)["added_ms"] == {"op": "<=", "bound": 3.0}


def test_an_unknown_comparison_is_refused() -> None:
    with pytest.raises(ValueError, match="target odd: unknown comparison '=='"):
        T.meets({"odd": ("==", 1.0)}, "odd", 1.0)
