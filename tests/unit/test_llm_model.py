"""From the CPU ``tensorrt_llm`` model's parameters to the engine it builds (no model run).

``CpuEngine.pipeline_args`` is what ``make_pipeline`` hands to OpenVINO GenAI's
ContinuousBatchingPipeline, so asserting on it shows what each setting changes; the real
pipeline runs in tests/integration/test_cpu_engine.py and behind a server in
tests/integration/test_serving.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonllm.builders.repository import parse_config
from tritonllm.ensembles.cpu_engine import CpuEngine, EngineConfig, EngineStats, EventCallback
from tritonllm.ensembles.llm_model import build_service, engine_config, request_limits
from tritonllm.ensembles.sampling import SamplingParams
from tritonllm.ensembles.tokenization import SpecialIds, load_tokenizer, read_special_ids
from tritonllm.errors import ConfigError
from tritonllm.settings import CpuLLMParams

ENGINE = Path("/engines/tiny")


@pytest.mark.parametrize("split_fuse", [True, False])
def test_dynamic_split_fuse_reaches_the_scheduler(split_fuse: bool) -> None:
    sched, _, _ = CpuEngine.pipeline_args(EngineConfig(ENGINE, dynamic_split_fuse=split_fuse))
    assert sched.dynamic_split_fuse is split_fuse


@pytest.mark.parametrize("device", ["CPU", "GPU.1"])
def test_the_device_reaches_the_pipeline(device: str) -> None:
    _, got, _ = CpuEngine.pipeline_args(EngineConfig(ENGINE, device=device))
    assert got == device


def test_the_other_settings_reach_the_scheduler_and_the_properties() -> None:
    import openvino as ov

    sched, device, props = CpuEngine.pipeline_args(EngineConfig(
        ENGINE, max_num_seqs=3, max_num_batched_tokens=512, cache_size_gb=2.4,
        kv_cache_precision="u8", inference_precision="bf16", enable_prefix_caching=True,
        num_threads=2))
    assert (sched.max_num_seqs, sched.max_num_batched_tokens, sched.cache_size,
            sched.enable_prefix_caching, sched.dynamic_split_fuse) == (3, 512, 2, True, True)
    assert device == "CPU"
    assert props == {"KV_CACHE_PRECISION": ov.Type.u8, "INFERENCE_PRECISION_HINT": ov.Type.bf16,
                     "INFERENCE_NUM_THREADS": 2}
    _, _, props = CpuEngine.pipeline_args(EngineConfig(ENGINE))  # 0: OpenVINO's default
    assert "INFERENCE_NUM_THREADS" not in props


def test_engine_config_carries_every_engine_parameter() -> None:
    p = CpuLLMParams(engine_dir=ENGINE, max_num_seqs=5, max_num_batched_tokens=640,
                     max_input_len=600, kv_cache_precision="f16", cache_size_gb=3.0,
                     enable_prefix_caching=True, dynamic_split_fuse=False, num_threads=2,
                     device="GPU")
    assert engine_config(p) == EngineConfig(
        ENGINE, max_num_seqs=5, max_num_batched_tokens=640, cache_size_gb=3.0,
        kv_cache_precision="f16", enable_prefix_caching=True, dynamic_split_fuse=False,
        device="GPU", num_threads=2)
    defaults = engine_config(CpuLLMParams(engine_dir=ENGINE))
    assert (defaults.dynamic_split_fuse, defaults.device, defaults.num_threads) == (True, "CPU", 0)


@pytest.mark.parametrize(("flag", "split_fuse"), [
    (None, True), ("--enable-chunked-context", True), ("--disable-chunked-context", False)])
def test_the_chunked_context_option_switches_dynamic_split_fuse(
        flag: str | None, split_fuse: bool, fake_engine: Callable[..., Path],
        tmp_path: Path) -> None:
    """``tritonllm repo`` → config.pbtxt → the model's parameters → the scheduler."""
    from tritonllm.cli import main

    engine, out = fake_engine(tmp_path / "engine", "cpu"), tmp_path / "repo"
    r = CliRunner().invoke(main, ["repo", str(engine), "--out", str(out),
                                  *([flag] if flag else [])])
    assert r.exit_code == 0, r.output
    cfg = parse_config((out / "tensorrt_llm" / "config.pbtxt").read_text(), "tensorrt_llm")
    p = CpuLLMParams.from_triton_parameters(
        {k: {"string_value": v.string_value} for k, v in cfg.parameters.items()},
        model_dir=out / "tensorrt_llm")
    assert p.dynamic_split_fuse is split_fuse
    sched, device, _ = CpuEngine.pipeline_args(engine_config(p))
    assert sched.dynamic_split_fuse is split_fuse
    assert device == "CPU"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, r"'max_input_len' \(unset\) must be set and at most 'max_num_batched_tokens' \(8192\)"),
    ({"max_seq_len": 9000}, r"'max_input_len' \(9000\) must be set and at most"),
    ({"max_input_len": 513, "max_num_batched_tokens": 512}, r"'max_input_len' \(513\)"),
    ({"max_input_len": 8, "max_num_batched_tokens": 8, "max_num_seqs": 9},
     r"needs 'max_num_seqs' \(9\) at most 'max_num_batched_tokens' \(8\)"),
])
def test_whole_prompt_scheduling_refuses_prompts_longer_than_a_step(
        kwargs: dict[str, int], message: str) -> None:
    """Without split-fuse OpenVINO GenAI fails the whole step on a longer prompt (every request
    in it; measured with 2026.4), so such a configuration is refused where it is parsed."""
    with pytest.raises(ConfigError, match=message):
        CpuLLMParams(engine_dir=ENGINE, dynamic_split_fuse=False, **kwargs)  # type: ignore[arg-type]
    CpuLLMParams(engine_dir=ENGINE, dynamic_split_fuse=True, **kwargs)  # type: ignore[arg-type]
    CpuLLMParams(engine_dir=ENGINE, dynamic_split_fuse=False, max_input_len=512,
                 max_num_batched_tokens=512)


def test_disabling_chunked_context_for_an_engine_with_long_prompts_is_refused(
        fake_engine: Callable[..., Path], tmp_path: Path) -> None:
    from tritonllm.builders.manifest import EngineLimits
    from tritonllm.cli import main

    limits = EngineLimits(max_batch_size=8, max_input_len=255, max_seq_len=256,
                          max_num_tokens=128, vocab_size=1000, bos_token_id=1,
                          eos_token_ids=(2,), pad_token_id=3)
    engine = fake_engine(tmp_path / "engine", "cpu", limits)
    r = CliRunner().invoke(main, ["repo", str(engine), "--out", str(tmp_path / "repo"),
                                  "--disable-chunked-context"])
    assert r.exit_code != 0
    assert [line for line in r.output.splitlines() if line.startswith("error:")] == [
        "error: tensorrt_llm: parameter 'dynamic_split_fuse' false schedules each prompt whole, "
        "so 'max_input_len' (255) must be set and at most 'max_num_batched_tokens' (128)"]
    assert not (tmp_path / "repo").exists()


class RecordingEngine:
    """An Engine that records the config it was made with (no pipeline)."""

    max_num_seqs = 4

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.after_events: Callable[[], None] | None = None
        self.closed = False

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams,
               on_event: EventCallback, stream: bool = True) -> int:
        raise AssertionError("not used")

    def cancel(self, request_id: int) -> None:
        pass

    def stats(self) -> EngineStats:
        raise AssertionError("not used")

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True


def test_build_service_wires_the_parameters_through(tiny_model: Path) -> None:
    tokenizer = load_tokenizer(tiny_model)
    special = read_special_ids(tiny_model, tokenizer)
    p = CpuLLMParams(engine_dir=tiny_model, max_num_seqs=4, max_input_len=100, max_seq_len=128,
                     dynamic_split_fuse=False, device="GPU", exclude_input_in_output=False,
                     cancellation_check_period_ms=50, max_queue_size=7,
                     max_stream_interval_ms=20)
    made: list[RecordingEngine] = []

    def make(config: EngineConfig) -> RecordingEngine:
        made.append(RecordingEngine(config))
        return made[-1]

    service = build_service(p, tokenizer, special, make_engine=make)
    try:
        (engine,) = made
        assert service.engine is engine
        assert engine.config == engine_config(p)
        assert (engine.config.dynamic_split_fuse, engine.config.device) == (False, "GPU")
        assert service.limits == request_limits(p, len(tokenizer), special)
        assert (service.limits.max_input_len, service.limits.max_seq_len) == (100, 128)
        assert service.limits.end_ids == special.end_ids
        assert service.default_exclude_input is False
        assert service.default_streaming is False
        assert service.max_queue_size == 7
        assert service.max_stream_interval_s == pytest.approx(0.02)
        ids = tokenizer.encode("hello world", add_special_tokens=False)
        assert service.decode(ids) == tokenizer.decode(ids, skip_special_tokens=True)
    finally:
        service.close()
    assert engine.closed


def test_request_limits_prefer_the_parameters_end_and_pad_ids() -> None:
    special = SpecialIds(bos_id=1, end_ids=(2, 5), pad_id=3)
    p = CpuLLMParams(engine_dir=ENGINE, max_seq_len=64)
    limits = request_limits(p, 100, special)
    # the checkpoint's end ids, all of them; the pad id defaults to the end id
    assert (limits.end_ids, limits.pad_id, limits.vocab_size) == ((2, 5), 2, 100)
    assert (limits.max_input_len, limits.max_seq_len) == (64, 64)
    limits = request_limits(dataclasses.replace(p, end_id=7, pad_id=0), 100, special)
    assert (limits.end_ids, limits.pad_id) == ((7,), 0)
