"""Scenario defaults and the CLI's string parsers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonllm.errors import ConfigError
from tritonllm.perf.scenario import LengthSpec, LoadPoint, Scenario, parse_concurrency, parse_length


def test_parse_length_and_concurrency() -> None:
    assert parse_length("128") == LengthSpec(128, 0.0)
    assert parse_length("128:16") == LengthSpec(128, 16.0)
    assert str(LengthSpec(64, 8)) == "64:8" and str(LengthSpec(64)) == "64"
    for bad in ("", "x", "1:2:3", "0", "10:-1", "1.5"):
        with pytest.raises(ConfigError, match="--input-tokens"):
            parse_length(bad)
    assert parse_concurrency("1,4, 16") == (1, 4, 16)
    for bad, words in [("1,x", "not an integer"), ("0", "at least 1"), ("4,4", "twice")]:
        with pytest.raises(ConfigError, match=words):
            parse_concurrency(bad)


def test_points_and_labels() -> None:
    assert [p.label for p in Scenario(concurrency=(1, 4)).points] == ["concurrency=1",
                                                                     "concurrency=4"]
    (p,) = Scenario(request_rate=2.5).points
    assert (p.label, p.rate, p.concurrency) == ("request_rate=2.5", 2.5, None)
    assert LoadPoint.from_dict(p.to_dict()) == p


def test_validation_names_the_option() -> None:
    for kw, words in [({"requests": 0}, "--requests"), ({"request_rate": 0}, "--request-rate"),
                      ({"duration": -1}, "--duration"), ({"tool": "x"}, "--tool"),
                      ({"warmup": -1}, "--warmup"), ({"concurrency": ()}, "--concurrency")]:
        with pytest.raises(ConfigError, match=words):
            Scenario(**kw)


def test_round_trip() -> None:
    s = Scenario(url="grpc://h:1", concurrency=(2, 8), input_tokens=LengthSpec(32, 4),
                 dataset=Path("d.jsonl"), sampling={"temperature": 0.5}, headers={"a": "b"})
    assert Scenario.from_dict(s.to_dict()) == s
    assert s.grpc_address == "h:1"
    assert Scenario.from_dict({**s.to_dict(), "future_key": 1}) == s
