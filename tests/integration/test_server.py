"""The real tritonserver (nvidia-pytriton's, CPU only) started by tritonllm.server and by
`tritonllm serve`, on throwaway repositories of trivial Python-backend models.

Free ports on 127.0.0.1 only; every wait polls a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonllm.errors import ServingError
from tritonllm.server import ServerOptions, TritonServer, find_tritonserver

pytestmark = pytest.mark.integration

try:
    INSTALL = find_tritonserver()
except ServingError as e:  # pragma: no cover - the serve extra is not installed
    pytest.skip(f"no tritonserver: {e}", allow_module_level=True)

CONFIG = """\
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

DOUBLER = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x * 2)]))
        return responses
"""

BROKEN = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights missing: marker-5c1d")

    def execute(self, requests):
        return []
"""

# initialize() waits for a file nobody creates (bounded), so the model stays LOADING.
SLOW = """\
import os
import time


class TritonPythonModel:
    def initialize(self, args):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not os.path.exists(__file__ + ".go"):
            time.sleep(0.05)

    def execute(self, requests):
        return []
"""


def _add_model(repo: Path, name: str, code: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(CONFIG)
    (repo / name / "1" / "model.py").write_text(code)


@pytest.fixture(scope="module")
def good_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("good")
    _add_model(repo, "doubler", DOUBLER)
    return repo


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("broken")
    _add_model(repo, "doubler", DOUBLER)
    _add_model(repo, "broken", BROKEN)
    return repo


def _options(repo: Path, **kwargs: object) -> ServerOptions:
    return ServerOptions(repo, http_port=0, grpc_port=0, metrics_port=0, host="127.0.0.1",
                         **kwargs)  # type: ignore[arg-type]


def _get(url: str, body: dict[str, object] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, data=data), timeout=10) as r:
        return r.status, r.read()


def _live_group(pgid: int) -> list[int]:
    """Non-zombie processes in process group ``pgid``."""
    live = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, _ppid, pgrp = stat[stat.rfind(")") + 2:].split()[:3]
            if state != "Z" and int(pgrp) == pgid:
                live.append(int(entry.name))
    return live


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_serves_and_stops_cleanly(good_repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with TritonServer(_options(good_repo, log_file=log)) as server:
        pid = server.pid
        assert pid is not None and server.is_running()
        ports = {server.http_port, server.grpc_port, server.metrics_port}
        assert len(ports) == 3 and 0 not in ports
        assert server.url_http == f"http://127.0.0.1:{server.http_port}"
        assert server.url_grpc == f"grpc://127.0.0.1:{server.grpc_port}"
        assert server.url_metrics == f"http://127.0.0.1:{server.metrics_port}/metrics"
        assert [(m.name, m.state) for m in server.models] == [("doubler", "READY")]
        assert server.version and server.version.startswith("2.")

        assert _get(f"{server.url_http}/v2/health/ready")[0] == 200
        _, body = _get(f"{server.url_http}/v2/models/doubler/infer", {"inputs": [
            {"name": "IN", "shape": [3], "datatype": "FP32", "data": [1.0, 2.5, -3.0]}]})
        assert json.loads(body)["outputs"][0]["data"] == [2.0, 5.0, -6.0]
        assert b"nv_inference_count" in _get(server.url_metrics)[1]
        with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=5):
            pass

        env = _environ(pid)
        assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
        if INSTALL.libs_dir is not None:
            # this interpreter's libpython dir may come first (see server_environment)
            assert str(INSTALL.libs_dir) in env["LD_LIBRARY_PATH"].split(os.pathsep)[:2]
        assert len(_live_group(pid)) >= 2  # tritonserver and the model's Python stub

    assert not server.is_running()
    assert _live_group(pid) == []
    assert "successfully loaded 'doubler'" in log.read_text()
    assert server.stop() == 0  # idempotent: the exit code of the clean stop


def test_model_that_fails_to_load_is_named_with_its_error(broken_repo: Path,
                                                           tmp_path: Path) -> None:
    server = TritonServer(_options(broken_repo, log_file=tmp_path / "server.log"))
    with pytest.raises(ServingError) as e:
        server.__enter__()
    first = str(e.value).splitlines()[0]
    assert first.startswith("model 'broken' failed to load:")
    assert "RuntimeError: weights missing: marker-5c1d" in first
    assert "doubler" not in first
    assert server.pid is not None and _live_group(server.pid) == []
    assert "marker-5c1d" in (tmp_path / "server.log").read_text()


@pytest.mark.parametrize("busy", ["http", "grpc", "metrics"])
def test_busy_port_is_one_line_naming_it(good_repo: Path, busy: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ports = {name: port if name == f"{busy}_port" else 0
                 for name in ("http_port", "grpc_port", "metrics_port")}
        server = TritonServer(ServerOptions(good_repo, host="127.0.0.1", **ports))
        with pytest.raises(ServingError) as e:
            server.start()
    message = str(e.value)
    assert len(message.splitlines()) == 1
    assert f"port {port} (" in message and "already in use" in message
    assert server.pid is None  # nothing was started


def test_startup_timeout_names_the_loading_model(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _add_model(repo, "slow", SLOW)
    server = TritonServer(_options(repo, startup_timeout=1.5, stop_timeout=5))
    server.start()
    with pytest.raises(ServingError, match=r"not ready after 1.5s \(still loading: slow\)"):
        server.wait_ready()
    assert server.pid is not None and _live_group(server.pid) == []
    log = server.log_path
    assert log is not None and log.is_file()  # kept after a failure
    log.unlink()
    log.parent.rmdir()


class _Cli:
    """`python -m tritonllm serve ...` with its stdout read line by line in a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tritonllm", "serve", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line starting with {prefix!r}: {self.stdout}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"exited: {self.stdout} {self.proc.stderr.read()}")  # type: ignore[union-attr]
            self.stdout.append(line)
            if line.strip().startswith(prefix):
                return line

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


@pytest.fixture
def cli_cleanup() -> Iterator[list[_Cli]]:
    started: list[_Cli] = []
    yield started
    for cli in started:
        if cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.communicate()


PORT_ARGS = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--host",
             "127.0.0.1")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_until_signal(good_repo: Path, cli_cleanup: list[_Cli],
                                    sig: signal.Signals) -> None:
    cli = _Cli(str(good_repo), *PORT_ARGS, "--", "--log-info=true")
    cli_cleanup.append(cli)
    assert "ready" in cli.read_until("tritonserver") and "doubler" in cli.stdout[-1]
    http = cli.read_until("HTTP").split()[-1]
    assert cli.read_until("gRPC").split()[-1].startswith("grpc://127.0.0.1:")
    metrics = cli.read_until("metrics").split()[-1]
    pid = int(cli.read_until("pid").split()[-1])
    assert _get(f"{http}/v2/health/ready")[0] == 200
    assert _get(metrics)[0] == 200

    cli.proc.send_signal(sig)
    code, err = cli.finish()
    assert code == 0, err
    assert "tritonserver stopped" in err
    assert _live_group(pid) == []


def test_serve_command_reports_a_broken_model_in_one_line(
        broken_repo: Path, cli_cleanup: list[_Cli], tmp_path: Path) -> None:
    cli = _Cli(str(broken_repo), *PORT_ARGS, "--log-file", str(tmp_path / "server.log"))
    cli_cleanup.append(cli)
    code, err = cli.finish()
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("error: model 'broken' failed to load:")
    assert "marker-5c1d" in errors[0]


def test_serve_command_fails_when_the_server_dies(good_repo: Path, cli_cleanup: list[_Cli],
                                                  tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    cli = _Cli(str(good_repo), *PORT_ARGS, "--log-file", str(log))
    cli_cleanup.append(cli)
    pid = int(cli.read_until("pid").split()[-1])
    regions = _shm_regions(pid)
    assert regions and all(r.name.startswith("tritonllm_") for r in regions)
    os.killpg(pid, signal.SIGKILL)  # the stubs too (an OOM kill): their regions stay behind
    code, err = cli.finish()
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"error: tritonserver was killed by SIGKILL while serving; log: {log}")
    assert _live_group(pid) == []  # the model's stub too
    assert log.is_file()
    assert [r for r in regions if r.exists()] == []  # the killed server's shared memory


def _shm_regions(pgid: int) -> list[Path]:
    """The /dev/shm regions of the Python stubs in the group (a stub's argv[2])."""
    found = []
    for pid in _live_group(pgid):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if argv[0].endswith(b"triton_python_backend_stub"):
            found.append(Path("/dev/shm") / argv[2].decode())
    return found
