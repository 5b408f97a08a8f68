"""tritonllm.server without a running server: which binary, backend dir, environment, argv,
option checks, log parsing, the busy-port check, and the `serve` command's argument errors."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonllm import triton_binary
from tritonllm.cli import main
from tritonllm.errors import ConfigError, ServingError
from tritonllm.server import (
    ServerOptions,
    StopReport,
    TritonInstall,
    TritonServer,
    busy_port_from_log,
    describe_exit,
    find_tritonserver,
    load_failures_from_log,
    prepare_backend_dir,
    server_environment,
    tritonserver_command,
)
from tritonllm.supervision import STUB_NAME


def _executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _fake_wheel(root: Path, versions: tuple[str, ...] = ("3.10", "3.11", "3.12")) -> Path:
    """site-packages with the nvidia-pytriton layout; returns bin/tritonserver."""
    dist = root / "pytriton" / "tritonserver"
    exe = _executable(dist / "bin" / "tritonserver")
    python = dist / "backends" / "python"
    python.mkdir(parents=True)
    (python / "libtriton_python.so").write_bytes(b"so")
    (python / "triton_python_backend_utils.py").write_text("# utils\n")
    (python / "__pycache__").mkdir()
    for version in versions:
        _executable(dist / "python_backend_stubs" / version / STUB_NAME, f"stub {version}\n")
    (dist / "caches" / "local").mkdir(parents=True)
    (root / "nvidia_pytriton.libs").mkdir()
    return exe


@pytest.fixture
def no_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_binary, "wheel_tritonserver", lambda: None)


# -- find_tritonserver ---------------------------------------------------------------------


def test_env_var_wins_over_path_and_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_wheel(tmp_path / "site")
    monkeypatch.setattr(triton_binary, "wheel_tritonserver", lambda: wheel)
    on_path = _executable(tmp_path / "bin" / "tritonserver")
    chosen = _executable(tmp_path / "custom" / "my-tritonserver")
    found = find_tritonserver({"TRITONSERVER": str(chosen), "PATH": str(on_path.parent)})
    assert found == TritonInstall(chosen, "$TRITONSERVER")


def test_path_wins_over_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_wheel(tmp_path / "site")
    monkeypatch.setattr(triton_binary, "wheel_tritonserver", lambda: wheel)
    on_path = _executable(tmp_path / "bin" / "tritonserver")
    found = find_tritonserver({"PATH": f"{tmp_path / 'empty'}{os.pathsep}{on_path.parent}"})
    assert found == TritonInstall(on_path, "PATH")


def test_wheel_is_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_wheel(tmp_path / "site")
    monkeypatch.setattr(triton_binary, "wheel_tritonserver", lambda: wheel)
    assert find_tritonserver({"PATH": str(tmp_path)}) == TritonInstall(wheel, "wheel")


def test_nothing_found_says_how_to_get_one(tmp_path: Path, no_wheel: None) -> None:
    with pytest.raises(ServingError, match=r"TRITONSERVER.*PATH.*nvidia-pytriton"):
        find_tritonserver({"PATH": str(tmp_path)})


def test_bad_env_var_is_a_config_error(tmp_path: Path, no_wheel: None) -> None:
    not_executable = tmp_path / "tritonserver"
    not_executable.write_text("")
    with pytest.raises(ConfigError, match=r"\$TRITONSERVER=.*not an executable"):
        find_tritonserver({"TRITONSERVER": str(not_executable), "PATH": ""})


def test_finds_the_installed_wheel() -> None:
    exe = triton_binary.wheel_tritonserver()
    if exe is None:
        pytest.skip("nvidia-pytriton is not installed")
    install = TritonInstall(exe, "wheel")
    assert exe.name == "tritonserver" and os.access(exe, os.X_OK)
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in install.stub_versions()
    assert install.libs_dir is not None and install.libs_dir.name == "nvidia_pytriton.libs"


# -- the install layout and the backend directory ------------------------------------------


def test_wheel_layout_properties(tmp_path: Path) -> None:
    install = TritonInstall(_fake_wheel(tmp_path, ("3.9", "3.10", "3.11")), "wheel")
    assert install.stub_versions() == ["3.9", "3.10", "3.11"]  # numeric order
    assert install.libs_dir == tmp_path / "nvidia_pytriton.libs"
    assert install.caches_dir == tmp_path / "pytriton" / "tritonserver" / "caches"


def test_other_installs_have_no_wheel_parts(tmp_path: Path) -> None:
    install = TritonInstall(_executable(tmp_path / "opt" / "bin" / "tritonserver"), "PATH")
    assert install.stubs_dir is None and install.libs_dir is None and install.caches_dir is None
    with pytest.raises(ServingError, match="python_backend_stubs"):
        prepare_backend_dir(install, tmp_path / "backends")


def test_symlinked_binary_finds_its_wheel(tmp_path: Path) -> None:
    exe = _fake_wheel(tmp_path / "site")
    link = tmp_path / "bin" / "tritonserver"
    link.parent.mkdir()
    link.symlink_to(exe)
    assert TritonInstall(link, "PATH").libs_dir == tmp_path / "site" / "nvidia_pytriton.libs"


def test_backend_dir_has_the_stub_for_this_python(tmp_path: Path) -> None:
    install = TritonInstall(_fake_wheel(tmp_path / "site"), "wheel")
    dest = prepare_backend_dir(install, tmp_path / "backends", python=(3, 11))
    python = dest / "python"
    assert sorted(p.name for p in python.iterdir()) == sorted(
        ["libtriton_python.so", "triton_python_backend_utils.py", STUB_NAME])
    assert (python / STUB_NAME).read_text() == "stub 3.11\n"
    assert os.access(python / STUB_NAME, os.X_OK)
    assert (python / "libtriton_python.so").resolve() == (
        install.root / "backends" / "python" / "libtriton_python.so")
    # preparing again (another Python) replaces the stub
    prepare_backend_dir(install, dest, python=(3, 12))
    assert (python / STUB_NAME).read_text() == "stub 3.12\n"


def test_backend_dir_defaults_to_a_new_temporary_folder(tmp_path: Path) -> None:
    this_python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    install = TritonInstall(_fake_wheel(tmp_path, (this_python,)), "wheel")
    first, second = prepare_backend_dir(install), prepare_backend_dir(install)
    try:
        assert first != second and (first / "python" / STUB_NAME).is_file()
    finally:
        shutil.rmtree(first)
        shutil.rmtree(second)


def test_missing_stub_names_the_python_and_what_exists(tmp_path: Path) -> None:
    install = TritonInstall(_fake_wheel(tmp_path, ("3.10", "3.11")), "wheel")
    with pytest.raises(ServingError, match=r"Python 3\.14 \(it has: 3\.10, 3\.11\)"):
        prepare_backend_dir(install, tmp_path / "backends", python=(3, 14))


# -- environment and command line ----------------------------------------------------------


def test_environment_puts_this_python_and_the_wheel_libs_first(tmp_path: Path) -> None:
    install = TritonInstall(_fake_wheel(tmp_path), "wheel")
    bin_dir = str(Path(sys.executable).parent)
    env = server_environment(install, {"PATH": f"/usr/bin:{bin_dir}", "LD_LIBRARY_PATH": "/x",
                                       "KEEP": "1"})
    assert env["PATH"].split(os.pathsep) == [bin_dir, "/usr/bin"]
    # This interpreter's libpython comes first (the stub must link the same patch level as the
    # interpreter's extension modules), then the wheel's libraries.
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    ours = [libdir] if libdir and soname and (Path(libdir) / soname).exists() else []
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [*ours, str(install.libs_dir), "/x"]
    assert env["KEEP"] == "1"


def test_environment_of_other_installs_keeps_ld_library_path(tmp_path: Path) -> None:
    install = TritonInstall(_executable(tmp_path / "bin" / "tritonserver"), "PATH")
    env = server_environment(install, {"PATH": "/usr/bin"})
    assert "LD_LIBRARY_PATH" not in env
    assert env["PATH"].startswith(str(Path(sys.executable).parent) + os.pathsep)


def test_command_line(tmp_path: Path) -> None:
    options = ServerOptions(tmp_path, host="127.0.0.1", log_verbose=1,
                            extra_args=("--log-info=false", "--strict-readiness", "true"))
    argv = tritonserver_command(options, Path("/x/tritonserver"),
                                ports={"http": 1, "grpc": 2, "metrics": 3},
                                backend_dir=Path("/b"), cache_dir=Path("/c"))
    assert argv[0] == "/x/tritonserver"
    for arg in (f"--model-repository={tmp_path.resolve()}", "--http-address=127.0.0.1",
                "--http-port=1", "--grpc-port=2", "--metrics-port=3", "--log-verbose=1",
                "--model-control-mode=none", "--backend-directory=/b", "--cache-directory=/c",
                "--exit-on-error=false"):
        assert arg in argv
    assert argv[-3:] == ["--log-info=false", "--strict-readiness", "true"]


def test_command_line_respects_the_users_flags(tmp_path: Path) -> None:
    options = ServerOptions(tmp_path, extra_args=("--exit-on-error", "true",
                                                  "--cache-directory=/mine"))
    argv = tritonserver_command(options, Path("t"), ports={"http": 1, "grpc": 2, "metrics": 3})
    assert "--exit-on-error=false" not in argv and "--cache-directory=/mine" in argv
    assert not any(a.startswith("--backend-directory") for a in argv)


def test_managed_command_line(tmp_path: Path) -> None:
    options = ServerOptions(tmp_path, host="127.0.0.1", managed=True)
    ports = {"http": 1, "grpc": 2, "metrics": 3, "triton_http": 4}
    argv = tritonserver_command(options, Path("t"), ports=ports, shm_prefix="tritonllm_ab_",
                                admin_key="k3y")
    for arg in ("--http-address=127.0.0.1", "--http-port=4", "--grpc-port=2",
                "--model-control-mode=explicit", "--load-model=*",
                "--http-restricted-api=model-repository:tritonllm-admin=k3y",
                "--grpc-restricted-protocol=model-repository:tritonllm-admin=k3y",
                "--backend-config=python,shm-region-prefix-name=tritonllm_ab_",
                "--exit-timeout-secs=5"):
        assert arg in argv
    assert "--http-port=1" not in argv  # the guard's port


def test_managed_command_line_keeps_the_users_model_choice(tmp_path: Path) -> None:
    options = ServerOptions(tmp_path, managed=True, model_control_mode="explicit",
                            extra_args=("--load-model=a",))
    argv = tritonserver_command(options, Path("t"), ports={
        "http": 1, "grpc": 2, "metrics": 3, "triton_http": 4})
    assert "--load-model=*" not in argv and argv[-1] == "--load-model=a"
    assert not any("restricted" in a for a in argv)
    assert not options.loads_all_at_start
    assert ServerOptions(tmp_path, managed=True).loads_all_at_start


def test_unmanaged_servers_get_a_shm_prefix_unless_the_user_set_one(tmp_path: Path) -> None:
    argv = tritonserver_command(ServerOptions(tmp_path), Path("t"), ports={
        "http": 1, "grpc": 2, "metrics": 3}, shm_prefix="tritonllm_x_")
    assert "--backend-config=python,shm-region-prefix-name=tritonllm_x_" in argv
    mine = ServerOptions(tmp_path, extra_args=(
        "--backend-config=python,shm-region-prefix-name=own_",))
    assert mine.shm_prefix_given and not ServerOptions(tmp_path).shm_prefix_given


def test_stop_report_is_clean_only_when_nothing_went_wrong() -> None:
    from tritonllm.supervision import DrainResult

    drained = DrainResult(True, 1.25, "quiet")
    clean = StopReport(0, 3.5, drained, shm_removed=2)
    assert clean.clean
    assert clean.describe() == ("drained in 1.2s (quiet); tritonserver exited with code 0; "
                                "2 shared-memory region(s) removed; 3.5s")
    late = StopReport(0, 40.0, DrainResult(False, 30.0, "timed out", ["ensemble"]))
    assert not late.clean and "drain timed out after 30.0s; still in flight on ensemble" in (
        late.describe())
    killed = StopReport(-9, 36.0, drained, gave_up=True, killed=3)
    assert not killed.clean
    assert "exit timeout expired" in killed.describe()
    assert "3 process(es) killed with SIGKILL" in killed.describe()
    assert "tritonserver was killed by SIGKILL" in killed.describe()
    assert not StopReport(1, 1.0).clean and StopReport(0, 1.0).clean
    # drained, and only idle client streams kept models: Triton's exit timeout, exit code 1
    held = StopReport(1, 9.0, drained, gave_up=True, held=("ensemble",))
    assert held.clean and "ensemble still referenced after the drain" in held.describe()
    assert StopReport(-6, 9.0, drained, gave_up=True, held=("ensemble",)).clean
    assert not StopReport(1, 9.0, drained, gave_up=True, killed=1, held=("ensemble",)).clean


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"http_port": 70000}, "http_port"),
    ({"grpc_port": -1}, "grpc_port"),
    ({"http_port": 9000, "metrics_port": 9000}, "must differ"),
    ({"model_control_mode": "auto"}, "model_control_mode"),
    ({"log_verbose": -1}, "log_verbose"),
    ({"startup_timeout": 0}, "startup_timeout"),
    ({"extra_args": ("--http-port=9000",)}, "--http-port.*use --http-port"),
    ({"extra_args": ("--model-repository", "x")}, "--model-repository.*REPO argument"),
    ({"extra_args": ("--allow-http=false",)}, "--allow-http.*polls readiness over HTTP"),
    ({"drain_timeout": -1}, "drain_timeout"),
    ({"http_form_limit": 0}, "http_form_limit"),
    ({"managed": True, "model_control_mode": "poll"}, "cannot run with.*'poll'"),
    ({"managed": True, "extra_args": ("--http-restricted-api=model-repository:k=v",)},
     "restricts the model-repository API"),
])
def test_bad_options_name_the_option(tmp_path: Path, kwargs: dict[str, object],
                                     names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        ServerOptions(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_zero_ports_may_repeat(tmp_path: Path) -> None:
    options = ServerOptions(str(tmp_path), http_port=0, grpc_port=0, metrics_port=0)  # type: ignore[arg-type]
    assert options.repo == tmp_path


# -- reading the log -----------------------------------------------------------------------

FAILED_LINE = (
    'E1121 19:46:34.466806 4739 model_lifecycle.cc:642] "failed to load \'bad\' version 1: '
    'Internal: RuntimeError: boom: the weights are missing\\n\\nAt:\\n  /r/bad/1/model.py(3): '
    'initialize\\n"')


def test_load_failures_from_log() -> None:
    text = "\n".join(['I1121 model_lifecycle.cc:472] "loading: bad:1"', FAILED_LINE,
                      "I1121 model_lifecycle.cc:777] \"failed to load 'bad'\""])
    (failure,) = load_failures_from_log(text)
    assert (failure.name, failure.version, failure.state) == ("bad", "1", "UNAVAILABLE")
    assert failure.reason.splitlines()[0] == (
        "Internal: RuntimeError: boom: the weights are missing")
    assert "model.py(3): initialize" in failure.reason


@pytest.mark.parametrize(("line", "message"), [
    ('E1121 19:46:42.115607 4881 main.cc:245] "failed to start GRPC service: Unavailable - '
     "Socket '127.0.0.1:18011' already in use \"", "port 18011 (gRPC) is already in use on "
     "127.0.0.1"),
    ('E1121 19:46:44.921793 4965 main.cc:257] "failed to start HTTP service: Unavailable - '
     "Socket '0.0.0.0:8000' already in use \"", "port 8000 (HTTP) is already in use on 0.0.0.0"),
])
def test_busy_port_from_log(line: str, message: str) -> None:
    assert busy_port_from_log("I1121 something else\n" + line) == message
    assert busy_port_from_log(FAILED_LINE) is None


def test_describe_exit() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-200) == "exited with code -200"


def test_busy_port_is_reported_before_starting(tmp_path: Path) -> None:
    started = tmp_path / "started"
    exe = _executable(tmp_path / "bin" / "tritonserver", f"#!/bin/sh\ntouch {started}\n")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        srv = TritonServer(ServerOptions(tmp_path, host="127.0.0.1", http_port=0, grpc_port=port,
                                         metrics_port=0), TritonInstall(exe, "PATH"))
        with pytest.raises(ServingError) as e:
            srv.start()
    assert str(e.value).splitlines() == [str(e.value)]
    assert f"port {port} (gRPC) is already in use" in str(e.value)
    assert not started.exists() and srv.pid is None


def test_missing_repo_is_a_config_error(tmp_path: Path) -> None:
    srv = TritonServer(ServerOptions(tmp_path / "nope"),
                       TritonInstall(_executable(tmp_path / "t"), "PATH"))
    with pytest.raises(ConfigError, match="nope is not a directory"):
        srv.start()


def test_ports_of_an_unstarted_server(tmp_path: Path) -> None:
    srv = TritonServer(ServerOptions(tmp_path, http_port=0, host="0.0.0.0"))
    assert srv.url_grpc == "grpc://127.0.0.1:8001"
    assert srv.url_metrics == "http://127.0.0.1:8002/metrics"
    with pytest.raises(ServingError, match="picked at start"):
        _ = srv.url_http
    assert srv.stop() is None


# -- the serve command's argument errors ---------------------------------------------------


def test_serve_rejects_a_managed_tritonserver_flag(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["serve", str(tmp_path), "--", "--http-port=1"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "error: tritonserver argument --http-port is managed by tritonllm: use --http-port "
        "(ServerOptions.http_port) instead"]


def test_serve_checks_its_options(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["serve", str(tmp_path), "--grpc-port", "70000"])
    assert r.exit_code == 2 and "--grpc-port" in r.output
    r = CliRunner().invoke(main, ["serve", str(tmp_path), "--drain-timeout", "-1"])
    assert r.exit_code == 2 and "--drain-timeout" in r.output
    r = CliRunner().invoke(main, ["serve", str(tmp_path), "--model-control-mode", "poll"])
    assert r.exit_code == 1 and "cannot run with model_control_mode 'poll'" in r.output
    r = CliRunner().invoke(main, ["serve", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output
