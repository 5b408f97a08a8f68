"""tritonllm.supervision without tritonserver: metrics, entry models, shared memory, the stub
watch (real processes posing as stubs in their own process group) and the drain (a scripted
admin endpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonllm import supervision
from tritonllm.supervision import (
    STUB_NAME,
    MetricsSnapshot,
    Supervisor,
    describe_status,
    entry_models,
    remove_shm_regions,
    stale_shm_regions,
    stub_processes,
)

METRICS = """\
# HELP nv_inference_count Number of inferences
nv_inference_count{model="ensemble",version="1"} 12
nv_inference_pending_request_count{model="tensorrt_llm",version="1"} 1
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 2
tritonllm_step_max_ms{model="tensorrt_llm"} 31.5
nv_cpu_utilization 0.5
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 64
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 4
"""


def test_metrics_snapshot_counts_work_in_flight_and_ignores_per_period_gauges() -> None:
    snap = MetricsSnapshot.parse(METRICS)
    assert snap.busy == 7
    names = [name.split("{")[0] for name, _ in snap.samples]
    assert names == ["nv_inference_count", "nv_inference_pending_request_count",
                     "nv_trt_llm_request_metrics", "nv_trt_llm_request_metrics",
                     "nv_trt_llm_request_metrics"]
    assert MetricsSnapshot.parse(METRICS.replace("31.5", "0")) == snap


def test_entry_models_are_those_nothing_else_calls() -> None:
    configs: dict[str, dict[str, Any]] = {
        "ensemble": {"ensemble_scheduling": {"step": [
            {"model_name": "preprocessing"}, {"model_name": "tensorrt_llm"},
            {"model_name": "postprocessing"}]}},
        "preprocessing": {}, "postprocessing": {}, "tensorrt_llm": {},
        "tensorrt_llm_bls": {"parameters": {
            "tensorrt_llm_model_name": {"string_value": "tensorrt_llm"},
            "tokenizer_dir": {"string_value": "x/tokenizer"}}},
    }
    assert entry_models(configs) == ["ensemble", "tensorrt_llm_bls"]
    del configs["ensemble"]  # a BLS-only repository: the LLM is still called by the BLS
    assert entry_models(configs) == ["postprocessing", "preprocessing", "tensorrt_llm_bls"]


def test_stale_regions_are_ours_old_and_unmapped(tmp_path: Path) -> None:
    old = time.time() - 120
    for name in ("tritonllm_a_1", "tritonllm_b_1", "tritonllm_c_1", "other_1"):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (old, old))
    (tmp_path / "tritonllm_new_1").write_bytes(b"x")  # may be a stub starting now
    stale = stale_shm_regions(shm=tmp_path, mapped={"tritonllm_b_1"})
    assert sorted(p.name for p in stale) == ["tritonllm_a_1", "tritonllm_c_1"]
    assert remove_shm_regions(stale) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other_1", "tritonllm_b_1", "tritonllm_new_1"]


def test_a_mapped_region_is_seen_as_in_use(tmp_path: Path) -> None:
    import mmap

    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    region = shm / f"tritonllm_unittest{os.getpid()}_1"
    region.write_bytes(b"\0" * 4096)
    try:
        with region.open("r+b") as f, mmap.mmap(f.fileno(), 4096):
            assert region.name in supervision._mapped_shm()
        assert region.name not in supervision._mapped_shm()
    finally:
        region.unlink()


# -- the stub watch, with real processes posing as stubs ----------------------------------


class FakeStubs:
    """Processes whose argv looks like a stub's, in one new process group."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pgid: int | None = None

    def start(self, model: str, instance: str, version: str = "1") -> int:
        script = self.root / model / version / "model.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text("import time\ntime.sleep(600)\n")
        argv = [str(self.root / STUB_NAME), str(script), "region", "1", "1", "1", "lib", "0",
                instance, ""]
        # the first one leads a new process group (in this session), the others join it
        p = subprocess.Popen(argv, executable=sys.executable, process_group=self.pgid or 0)
        self.procs.append(p)
        if self.pgid is None:
            self.pgid = p.pid
        return p.pid

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


class FakeAdmin:
    """The launcher's view of tritonserver, scripted."""

    def __init__(self, stubs: FakeStubs | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.stubs = stubs
        self.load_error: str | None = None
        self.rows: list[list[dict[str, Any]]] = []
        self.states: dict[str, str] | None = None  # a live index, if set
        self.snaps: list[MetricsSnapshot | None] = []

    def config(self, model: str) -> dict[str, Any]:
        return {}

    def unload(self, model: str) -> str | None:
        self.calls.append(("unload", model))
        if self.states is not None and self.states.get(model) == "READY":
            self.states[model] = "UNLOADING"
        return None

    def load(self, model: str, timeout: float) -> str | None:
        self.calls.append(("load", model))
        if self.stubs is not None and self.load_error is None:
            self.stubs.start(model, f"{model}_0_0")  # the reloaded model's new stub
        return self.load_error

    def index(self) -> list[dict[str, Any]] | None:
        if self.states is not None:
            return [_row(name, state) for name, state in self.states.items()]
        if not self.rows:
            return None  # not scripted: the watch cannot tell, and treats a death as a crash
        return self.rows.pop(0) if len(self.rows) > 1 else self.rows[0]

    def metrics(self) -> MetricsSnapshot | None:
        return self.snaps.pop(0) if len(self.snaps) > 1 else self.snaps[0]


@pytest.fixture
def stubs(tmp_path: Path) -> Iterator[FakeStubs]:
    s = FakeStubs(tmp_path)
    yield s
    s.close()


def _wait_gone(pid: int) -> None:
    """Until the killed process is a zombie (it is our child: nobody reaps it)."""
    deadline = time.monotonic() + 10
    while supervision._proc_stat(pid) is not None and supervision._proc_stat(pid)[0] != "Z":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_stub_processes_name_model_and_instance(stubs: FakeStubs) -> None:
    a = stubs.start("tensorrt_llm_bls", "tensorrt_llm_bls_0_0")
    b = stubs.start("preprocessing", "preprocessing_0_1")
    assert stubs.pgid is not None
    found = stub_processes(stubs.pgid)
    assert {(p, s.model, s.instance) for p, s in found.items()} == {
        (a, "tensorrt_llm_bls", "tensorrt_llm_bls_0_0"), (b, "preprocessing",
                                                          "preprocessing_0_1")}


def test_a_version_swap_is_not_a_crash(stubs: FakeStubs) -> None:
    """A client's load of version 2 starts new stubs, then retires version 1's: no reload."""
    admin = FakeAdmin(stubs)
    admin.states = {"tensorrt_llm": "READY"}
    old = stubs.start("tensorrt_llm", "tensorrt_llm_0_0", version="1")
    assert stubs.pgid is not None
    sup = Supervisor(admin, stubs.pgid, lambda _m: None,  # type: ignore[arg-type]
                     is_running=lambda: True, load_timeout=10)
    sup._known = stub_processes(stubs.pgid)
    stubs.start("tensorrt_llm", "tensorrt_llm_0_0", version="2")  # the new version loads
    os.kill(old, signal.SIGKILL)  # ... and the old one's stub ends
    _wait_gone(old)
    assert sup.check_stubs() == [] and admin.calls == []
    # later, with no new stub in that look: the version Triton no longer serves is not READY
    v2 = stubs.start("tensorrt_llm", "tensorrt_llm_0_1", version="2")
    sup._known = stub_processes(stubs.pgid)
    admin.states = None
    admin.rows = [[{"name": "tensorrt_llm", "version": "2", "state": "READY"}]]
    gone = stubs.start("tensorrt_llm", "tensorrt_llm_0_2", version="1")
    sup._known = stub_processes(stubs.pgid)
    os.kill(gone, signal.SIGKILL)
    _wait_gone(gone)
    assert sup.check_stubs() == [] and admin.calls == []
    # a stub of the served version that dies with nothing replacing it is a crash
    os.kill(v2, signal.SIGKILL)
    _wait_gone(v2)
    assert [d.stub.pid for d in sup.check_stubs()] == [v2]
    assert ("load", "tensorrt_llm") in admin.calls


def test_describe_status_of_a_zombie(stubs: FakeStubs) -> None:
    pid = stubs.start("m", "m_0_0")
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert describe_status(pid) == "was killed by SIGKILL"
    assert describe_status(2**22 + 12345) == "exited"


def test_a_dead_stub_gets_its_model_reloaded(stubs: FakeStubs) -> None:
    said: list[str] = []
    admin = FakeAdmin(stubs)
    old = stubs.start("tensorrt_llm_bls", "tensorrt_llm_bls_0_0")
    victim = stubs.start("tensorrt_llm_bls", "tensorrt_llm_bls_0_1")
    stubs.start("preprocessing", "preprocessing_0_0")
    assert stubs.pgid is not None
    sup = Supervisor(admin, stubs.pgid, said.append, is_running=lambda: True,  # type: ignore[arg-type]
                     load_timeout=5)
    sup._known = stub_processes(stubs.pgid)
    assert sup.check_stubs() == [] and sup.health_reason is None

    os.kill(victim, signal.SIGKILL)
    _wait_gone(victim)
    dead = sup.check_stubs()
    assert [(d.stub.pid, d.how) for d in dead] == [(victim, "was killed by SIGKILL")]
    assert admin.calls == [("unload", "tensorrt_llm_bls"), ("load", "tensorrt_llm_bls")]
    assert f"'tensorrt_llm_bls_0_1' (pid {victim}) was killed by SIGKILL" in said[0]
    assert said[-1].startswith("model 'tensorrt_llm_bls' reloaded in")
    assert sup.health_reason is None and sup.fatal is None
    assert sup.check_stubs() == []  # the reloaded model's stub is known now
    # the old version's other stub goes only now (its teardown ends after the new load):
    # expected, not a death
    os.kill(old, signal.SIGKILL)
    _wait_gone(old)
    assert sup.check_stubs() == [] and len(admin.calls) == 2


def test_reloads_have_a_budget_then_the_server_gives_up(stubs: FakeStubs) -> None:
    said: list[str] = []
    admin = FakeAdmin(stubs)
    stubs.start("m", "m_0_0")
    assert stubs.pgid is not None
    sup = Supervisor(admin, stubs.pgid, said.append, is_running=lambda: True,  # type: ignore[arg-type]
                     load_timeout=5, max_reloads=2)
    sup._known = stub_processes(stubs.pgid)
    for _ in range(3):
        pid = next(p for p, s in stub_processes(stubs.pgid).items() if s.model == "m")
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        sup.check_stubs()
    assert admin.calls.count(("load", "m")) == 2
    assert sup.fatal is not None and "died again after 2 reloads" in sup.fatal
    assert "supervisor (Kubernetes) restarts the server" in sup.fatal
    assert sup.health_reason is not None


def test_a_failed_reload_gives_up(stubs: FakeStubs) -> None:
    admin = FakeAdmin(stubs)
    admin.load_error = "failed to load 'm': boom"
    pid = stubs.start("m", "m_0_0")
    assert stubs.pgid is not None
    sup = Supervisor(admin, stubs.pgid, lambda _: None, is_running=lambda: True,  # type: ignore[arg-type]
                     load_timeout=5)
    sup._known = stub_processes(stubs.pgid)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    sup.check_stubs()
    assert sup.fatal is not None and "boom" in sup.fatal


# -- the drain ----------------------------------------------------------------------------


def _row(name: str, state: str) -> dict[str, Any]:
    return {"name": name, "version": "1", "state": state}


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "QUIET_S", 0.05)
    monkeypatch.setattr(supervision, "DRAIN_POLL_S", 0.01)


def _supervisor(admin: FakeAdmin) -> Supervisor:
    sup = Supervisor(admin, 0, lambda _: None, is_running=lambda: True,  # type: ignore[arg-type]
                     load_timeout=5)
    sup.entry = ["ensemble", "tensorrt_llm_bls"]
    return sup


def test_drain_ends_when_the_client_facing_models_are_unloaded(fast: None) -> None:
    admin = FakeAdmin()
    admin.rows = [[_row("ensemble", "UNLOADING"), _row("tensorrt_llm_bls", "UNLOADING")],
                  [_row("ensemble", "UNAVAILABLE"), _row("tensorrt_llm_bls", "UNAVAILABLE")]]
    admin.snaps = [MetricsSnapshot(2, (("a", "1"),)), MetricsSnapshot(0, (("a", "2"),))]
    sup = _supervisor(admin)
    result = sup.drain(10)
    assert result.drained and result.how == "unloaded"
    assert admin.calls == [("unload", "ensemble"), ("unload", "tensorrt_llm_bls")]
    assert sup.health_reason is not None and "draining" in sup.health_reason


def test_drain_ends_when_nothing_moves(fast: None) -> None:
    admin = FakeAdmin()
    admin.rows = [[_row("ensemble", "UNLOADING"), _row("tensorrt_llm_bls", "UNAVAILABLE")]]
    moving = [MetricsSnapshot(1, (("a", str(i)),)) for i in range(5)]
    admin.snaps = [*moving, MetricsSnapshot(0, (("a", "9"),))]
    result = _supervisor(admin).drain(10)
    assert result.drained and result.how == "quiet" and result.busy == ["ensemble"]
    assert admin.snaps == [MetricsSnapshot(0, (("a", "9"),))]  # it waited for the work


def test_drain_times_out_while_work_goes_on(fast: None) -> None:
    admin = FakeAdmin()
    admin.rows = [[_row("ensemble", "UNLOADING"), _row("tensorrt_llm_bls", "READY")]]
    admin.snaps = [MetricsSnapshot(1, ())]
    result = _supervisor(admin).drain(0.2)
    assert not result.drained and result.how == "timed out"
    assert result.busy == ["ensemble", "tensorrt_llm_bls"] and result.seconds >= 0.2


def test_a_second_signal_cuts_the_drain_short(fast: None) -> None:
    admin = FakeAdmin()
    admin.rows = [[_row("ensemble", "UNLOADING")]]
    admin.snaps = [MetricsSnapshot(1, ())]
    sup = _supervisor(admin)
    sup.hurry()
    assert sup.drain(60).how == "timed out"


def test_unload_all_waits_for_teardowns_not_for_held_models(
        stubs: FakeStubs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "DRAIN_POLL_S", 0.01)
    monkeypatch.setattr(supervision, "STUBLESS_HELD_AFTER_S", 0.05)
    monkeypatch.setattr(supervision, "HELD_AFTER_S", 0.3)
    bls = [stubs.start("bls", "bls_0_0"), stubs.start("bls", "bls_0_1")]
    llm = stubs.start("llm", "llm_0_0")  # held: a client stream's last request was to it
    assert stubs.pgid is not None
    admin = FakeAdmin(stubs)
    admin.states = {"ensemble": "READY", "bls": "READY", "llm": "READY"}
    sup = Supervisor(admin, stubs.pgid, lambda _: None, is_running=lambda: True,  # type: ignore[arg-type]
                     load_timeout=5)
    done: list[list[str]] = []
    t = threading.Thread(target=lambda: done.append(sup.unload_all(30)))
    t.start()
    deadline = time.monotonic() + 10
    while len(sup._unload_asked) < 3:  # every unload asked and the stubs of each noted
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(bls[0], signal.SIGKILL)  # bls's teardown has started: its stubs go one by one
    _wait_gone(bls[0])
    t.join(0.5)
    assert not done  # still waiting for bls, though ensemble and llm are held by now
    os.kill(bls[1], signal.SIGKILL)
    _wait_gone(bls[1])
    admin.states["bls"] = "UNAVAILABLE"
    t.join(10)
    assert done == [["ensemble", "llm"]]
    assert sorted(admin.calls) == [("unload", "bls"), ("unload", "ensemble"), ("unload", "llm")]
    assert llm in stub_processes(stubs.pgid)
