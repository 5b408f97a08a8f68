"""The compose stack's Prometheus files, through promtool: the rules and the config check, and
the rules' unit tests (``docker/prometheus/rules.test.yml``, from
:mod:`tritonllm.metrics_rules_tests`) pass — and fail once a threshold moves.

promtool is a system package (scripts/setup.sh installs it for EXTRAS=all, CI has it); without
it the tests that run it skip, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tritonllm.kubernetes import dump
from tritonllm.metrics_rules import Thresholds, alerts, records, rule_groups
from tritonllm.metrics_rules_tests import COMPOSE_BY, promtool_tests

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "docker" / "prometheus"
#: Where docker/compose.yaml mounts rules.yml in the Prometheus container.
MOUNTED_RULES = "/etc/prometheus/rules.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not on PATH (apt-get install prometheus)")


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _output(r: subprocess.CompletedProcess[str]) -> str:
    return r.stdout + r.stderr


@needs_promtool
def test_the_rules_pass_promtool_check() -> None:
    r = _promtool("check", "rules", PROMETHEUS / "rules.yml")
    assert r.returncode == 0, _output(r)
    assert f"{len(records()) + len(alerts())} rules found" in r.stdout, _output(r)


@needs_promtool
def test_the_config_passes_promtool_check(tmp_path: Path) -> None:
    """The config names the rules where the container mounts them: point it at the checkout's."""
    config = (PROMETHEUS / "prometheus.yml").read_text("utf-8")
    assert MOUNTED_RULES in config
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        config.replace(MOUNTED_RULES, str(tmp_path / "rules.yml")), encoding="utf-8")
    r = _promtool("check", "config", tmp_path / "prometheus.yml")
    assert r.returncode == 0, _output(r)


@needs_promtool
def test_every_alert_fires_and_stays_quiet_in_promtool_test() -> None:
    r = _promtool("test", "rules", PROMETHEUS / "rules.test.yml")
    assert r.returncode == 0, _output(r)


def test_the_shipped_test_file_covers_every_alert_both_ways() -> None:
    tests = promtool_tests("rules.yml")["tests"]
    names = {t["name"] for t in tests}
    for a in alerts(COMPOSE_BY):
        assert {f"{a.alert} fires", f"{a.alert} stays quiet"} <= names
    recorded = {e["expr"] for t in tests for e in t.get("promql_expr_test", ())}
    assert recorded <= {r.record for r in records(COMPOSE_BY)}


@needs_promtool
def test_a_moved_threshold_fails_the_tests(tmp_path: Path) -> None:
    """The tests can fail: the same document against rules with a p99 TTFT threshold of 1000 s
    (the TTFT alert no longer fires)."""
    (tmp_path / "rules.yml").write_text(
        dump({"groups": rule_groups(by=COMPOSE_BY, t=Thresholds(ttft_p99_s=1000))}),
        encoding="utf-8")
    (tmp_path / "rules.test.yml").write_text(dump(promtool_tests("rules.yml")),
                                             encoding="utf-8")
    r = _promtool("test", "rules", tmp_path / "rules.test.yml")
    assert r.returncode != 0, _output(r)
    assert "TritonLLMTimeToFirstTokenHigh fires" in _output(r)
