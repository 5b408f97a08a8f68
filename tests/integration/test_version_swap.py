"""Zero-loss model updates on one server: version 1 → 2 while 16 streams run.

The real tritonserver (managed, ``--model-control-mode explicit``) serves the tiny CPU
repository. Sixteen clients stream greedy 64-token requests to the ensemble without pause;
meanwhile ``tritonllm repo ENGINE2 --out REPO --version 2`` adds version 2 (an engine of other
weights, same tokenizer) and ``tritonllm models load`` loads every model: the ensemble with its
steps in one request (Triton loads the steps, then the ensemble once), then the BLS and llmapi
models that call them.

Checked against HF transformers' greedy text of each checkpoint, not against the server:
every request succeeds; every stream's text is exactly version 1's or exactly version 2's;
every stream started before the load finished on version 1 (those in flight included); every
request started after the load is version 2's; the index shows version 2 READY and version 1
no longer READY for every model.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tritonllm.cli import main
from tritonllm.client import LLMClient

pytestmark = pytest.mark.integration

STREAMS = 16
PROMPT = "The quick brown fox"
TOKENS = 64
AFTER = 2  # requests each client completes after the swap before the run stops


def _perturbed_copy(src: Path, dest: Path) -> Path:
    """The tiny checkpoint with other weights (seeded noise) and the very same tokenizer."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    gen = torch.Generator().manual_seed(1)
    for f in dest.glob("*.safetensors"):
        tensors = load_file(f)
        save_file({k: (v + 0.2 * torch.randn(v.shape, generator=gen, dtype=v.dtype)).contiguous()
                   for k, v in tensors.items()}, f, metadata={"format": "pt"})
    return dest


def _hf_greedy(model_dir: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False)
    return str(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))


@dataclass
class Call:
    start: float
    end: float = 0.0
    text: str | None = None
    error: BaseException | None = None


#: Both versions rendered alike: one preprocessing and one BLS/llmapi instance (2 cores).
REPO_OPTIONS = ["--preprocessing-instances", "1", "--bls-instances", "1"]


@pytest.fixture(scope="module")
def swap(tiny_model: Path, cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Any]:
    from tritonllm.builders import BuildSettings, build
    from tritonllm.server import ServerOptions, TritonServer

    t_fixture = time.monotonic()
    tmp = tmp_path_factory.mktemp("swap")
    second = _perturbed_copy(tiny_model, tmp / "model2")
    engine2 = tmp / "engine2"
    build(BuildSettings(checkpoint=second, engine="cpu", out=engine2))
    refs = {"1": _hf_greedy(tiny_model), "2": _hf_greedy(second)}
    repo = tmp / "repo"
    runner = CliRunner()
    r = runner.invoke(main, ["repo", str(cpu_engine), "--out", str(repo), *REPO_OPTIONS])
    assert r.exit_code == 0, r.output
    calls: list[Call] = []
    cond = threading.Condition()
    marks: dict[str, float] = {}  # "load": the load began; "loaded": it returned
    stop = threading.Event()
    with TritonServer(ServerOptions(repo=repo, http_port=0, grpc_port=0, metrics_port=0,
                                    model_control_mode="explicit", managed=True,
                                    startup_timeout=300,
                                    log_file=tmp / "tritonserver.log")) as srv:
        url = srv.grpc_address

        def client_loop() -> None:
            done_after = 0
            with LLMClient(url, timeout=120) as client:
                while not stop.is_set() and done_after < AFTER:
                    call = Call(time.monotonic())
                    try:
                        call.text = client.generate(PROMPT, TOKENS, stream=True).text
                    except Exception as e:  # counted and asserted below
                        call.error = e
                        stop.set()  # one failure fails the test: stop the load at once
                    call.end = time.monotonic()
                    with cond:
                        calls.append(call)
                        if "loaded" in marks and call.start > marks["loaded"]:
                            done_after += 1
                        cond.notify_all()

        threads = [threading.Thread(target=client_loop) for _ in range(STREAMS)]
        t_serving = time.monotonic()
        for t in threads:
            t.start()
        with cond:  # every client has finished a request on version 1: all are streaming
            assert cond.wait_for(lambda: len(calls) >= STREAMS or stop.is_set(), timeout=180)
        t_render = time.monotonic()
        r = runner.invoke(main, ["repo", str(engine2), "--out", str(repo), "--version", "2",
                                 *REPO_OPTIONS])
        assert r.exit_code == 0, r.output
        with cond:
            marks["load"] = time.monotonic()
        r = runner.invoke(main, ["models", "load", "--url", url, "--timeout", "300"])
        with cond:
            marks["loaded"] = time.monotonic()
        assert r.exit_code == 0, r.output
        load_output = r.output
        for t in threads:
            t.join(300)
        stop.set()
        t_done = time.monotonic()
        index = LLMClient(url).models()
        with LLMClient(srv.url_http, timeout=120) as http:  # HTTP, through the serve guard
            http.load_model("tensorrt_llm_bls")  # unchanged: Triton keeps it as it is
            http.unload_model("llmapi")
            after_unload = http.models()
    return {"refs": refs, "calls": calls, "t_render": t_render, "t_load": marks["load"],
            "t_loaded": marks["loaded"], "index": index, "load_output": load_output,
            "after_unload": after_unload,
            "timings": {"setup": t_serving - t_fixture, "render_v2": marks["load"] - t_render,
                        "load": marks["loaded"] - marks["load"],
                        "streaming": t_done - t_serving}}


def test_references_differ(swap: dict[str, Any]) -> None:
    assert swap["refs"]["1"] != swap["refs"]["2"]


def test_no_request_failed(swap: dict[str, Any]) -> None:
    failed = [c.error for c in swap["calls"] if c.error is not None]
    t = swap["timings"]
    print(f"\n{len(swap['calls'])} requests across the swap, {len(failed)} failed; "
          + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    assert failed == []


def test_every_stream_is_one_version(swap: dict[str, Any]) -> None:
    refs = swap["refs"]
    by_version = {v: 0 for v in refs}
    for c in swap["calls"]:
        assert c.text in (refs["1"], refs["2"]), c.text
        by_version["1" if c.text == refs["1"] else "2"] += 1
    print(f"\nanswered by version 1: {by_version['1']}, by version 2: {by_version['2']}")
    assert by_version["1"] and by_version["2"]


def test_streams_in_flight_at_the_load_finish_on_version_1(swap: dict[str, Any]) -> None:
    before = [c for c in swap["calls"] if c.start < swap["t_load"]]
    in_flight = [c for c in before if c.end > swap["t_load"]]
    print(f"\n{len(in_flight)} streams in flight when the load began; "
          f"{sum(c.text == swap['refs']['1'] for c in in_flight)} finished on version 1")
    assert len(in_flight) >= STREAMS // 2  # 16 streams never pause
    assert all(c.text == swap["refs"]["1"] for c in before)


def test_requests_after_the_load_are_version_2(swap: dict[str, Any]) -> None:
    after = [c for c in swap["calls"] if c.start > swap["t_loaded"]]
    assert len(after) >= STREAMS * AFTER
    assert all(c.text == swap["refs"]["2"] for c in after)


def test_index_serves_version_2_only(swap: dict[str, Any]) -> None:
    ready = {(m.name, m.version) for m in swap["index"] if m.state == "READY"}
    names = {m.name for m in swap["index"]}
    assert {(n, "2") for n in names} <= ready
    assert not {(n, "1") for n in names} & ready
    for n in names:
        assert f"loaded {n} " in swap["load_output"]
        assert re.search(rf"loaded {n} .*READY versions: 2$", swap["load_output"], re.M)


def test_load_and_unload_over_http(swap: dict[str, Any]) -> None:
    states = {(m.name, m.version): m.state for m in swap["after_unload"]}
    assert states[("tensorrt_llm_bls", "2")] == "READY"
    assert states[("llmapi", "2")] != "READY"
