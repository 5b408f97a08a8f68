"""``tritonllm launch`` — the containers' entrypoint — run as a program, outside a container.

Against the CPU target and the real tritonserver, the whole life of a container:
build (empty cache) → render → validate → exec the server (same PID) → ready → a stream in
flight → SIGTERM → the stream completes → clean exit 0; then a second start on the same cache
volume is a cache hit, this time exec'ing a bare ``tritonserver`` (``server.managed: false``),
and SIGTERM drains it the same way. No Docker engine exists here: this is the container's
logic, tested where it can run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonllm.client import LLMClient

pytestmark = pytest.mark.integration

TOKENS = 300  # long enough to be in flight when SIGTERM arrives (min_tokens: no early EOS)
READY_S = 240.0
BARE_EXIT_S = 10  # server.exit_timeout of the bare start (tritonserver --exit-timeout-secs)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _config(tmp: Path, checkpoint: Path, managed: bool) -> tuple[Path, dict[str, int]]:
    http, grpc, metrics = _free_ports(3)
    data: dict[str, Any] = {
        "name": "tiny", "checkpoint": str(checkpoint), "engine": "cpu",
        "cache_dir": str(tmp / "cache"), "repo_dir": str(tmp / "work" / "models"),
        "repository": {"kv_cache_precision": "f32"},
        "server": {"http_port": http, "grpc_port": grpc, "metrics_port": metrics,
                   "managed": managed, "drain_timeout": 60, "exit_timeout": BARE_EXIT_S},
    }
    path = tmp / f"tritonllm-{'managed' if managed else 'bare'}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, {"http": http, "grpc": grpc}


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_S
    with LLMClient(url, timeout=5) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"launch exited {proc.returncode}: {log.read_text()}"
            try:
                if client.health().ready:
                    return
            except Exception:
                pass
            time.sleep(0.5)  # polling readiness with a deadline, not a sync sleep
    raise AssertionError("launch: not ready in time")


def _life(config: Path, ports: dict[str, int]) -> dict[str, Any]:
    """Start launch, stream one long request, SIGTERM it mid-stream; what happened."""
    log = config.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tritonllm", "launch", "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT)
    record: dict[str, Any] = {"pid": proc.pid}
    try:
        _wait_ready(proc, f"localhost:{ports['grpc']}", log)
        record["exe"] = os.readlink(f"/proc/{proc.pid}/exe")
        record["cmdline"] = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        first = threading.Event()
        result: dict[str, Any] = {}

        def stream() -> None:
            try:
                with LLMClient(f"localhost:{ports['grpc']}", timeout=120) as c:
                    s = c.stream("The quick brown fox", TOKENS, min_tokens=TOKENS)
                    with s:
                        for _ in s:
                            first.set()
                    result["completion"] = s.completion
            except Exception as e:  # recorded, asserted by the caller
                result["error"] = e
            finally:
                first.set()

        t = threading.Thread(target=stream)
        t.start()
        assert first.wait(60)
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        record["code"] = proc.wait(120)
        record["stop_s"] = time.monotonic() - t_term
        record.update(result)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        record["log"] = log.read_text(errors="replace")
    return record


@pytest.fixture(scope="module")
def lives(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("launch")
    managed = _life(*_config(tmp, tiny_model, managed=True))
    bare = _life(*_config(tmp, tiny_model, managed=False))
    return {"managed": managed, "bare": bare}


def test_first_start_builds_into_the_empty_cache(lives: dict[str, Any]) -> None:
    log = lives["managed"]["log"]
    assert "(built)" in log and "cache hit" not in log, log
    assert "valid" in log


def test_second_start_is_a_cache_hit(lives: dict[str, Any]) -> None:
    log = lives["bare"]["log"]
    assert "(cache hit)" in log and "(built)" not in log, log


@pytest.mark.parametrize("life", ["managed", "bare"])
def test_launch_becomes_the_server(lives: dict[str, Any], life: str) -> None:
    """exec, not a child: the PID that was started is the server, so signals reach it."""
    r = lives[life]
    if life == "managed":
        assert [a.decode() for a in r["cmdline"][1:4]] == ["-m", "tritonllm", "serve"]
    else:
        assert Path(r["exe"]).name == "tritonserver", r["exe"]


def test_sigterm_lets_the_stream_finish_then_exits_cleanly(lives: dict[str, Any]) -> None:
    """Managed (the default, and what the manifests run): zero loss on SIGTERM."""
    r = lives["managed"]
    assert "error" not in r, (r.get("error"), r["log"][-2000:])
    c = r["completion"]
    assert c.finish_reason == "length" and c.output_tokens == TOKENS
    assert r["code"] == 0, r["log"][-2000:]
    assert "drained" in r["log"]
    print(f"managed: SIGTERM to exit {r['stop_s']:.1f}s, stream of {TOKENS} tokens completed")


def test_bare_tritonserver_stops_within_its_exit_timeout(lives: dict[str, Any]) -> None:
    """Bare tritonserver 2.51 exits by itself within --exit-timeout-secs.

    Its own drain does not keep a streamed ensemble request alive (measured here: the stream
    is cut, and the open gRPC stream holds Triton until the exit timeout, exit code 1), which
    is why ``server.managed`` defaults to true; docs/deploy.md has the numbers.
    """
    r = lives["bare"]
    assert r["stop_s"] < BARE_EXIT_S + 20, r["log"][-2000:]
    lost = "error" in r
    print(f"bare: SIGTERM to exit {r['stop_s']:.1f}s, exit code {r['code']}, "
          f"stream {'cut: ' + type(r['error']).__name__ if lost else 'completed'}")
