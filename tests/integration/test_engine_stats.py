"""The CPU engine's stats (what the nv_trt_llm_* metrics show) against independent counts.

Real OpenVINO GenAI pipeline, tiny model. The references are counted here, not by the engine:
the KV blocks a request needs from its own token count and the block size, the pool from the
model's shape and the cache size, tokens and finishes from the events the test received.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest

from tritonllm.contract import FINISH_CANCELLED, FINISH_LENGTH
from tritonllm.ensembles.cpu_engine import CPU_BLOCK_TOKENS, CpuEngine, EngineConfig, TokenEvent
from tritonllm.ensembles.engine_stats import EngineStats
from tritonllm.ensembles.sampling import SamplingParams

pytestmark = pytest.mark.integration
TIMEOUT = 60


def _pool_blocks(engine_dir: Path, cache_gb: int, value_bytes: int) -> int:
    cfg = json.loads((engine_dir / "config.json").read_text())
    kv_heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    block = cfg["num_hidden_layers"] * 2 * kv_heads * head_dim * CPU_BLOCK_TOKENS * value_bytes
    return cache_gb * 2**30 // block


def test_kv_blocks_requests_and_finishes_match_independent_counts(cpu_engine: Path) -> None:
    engine = CpuEngine(EngineConfig(cpu_engine, max_num_seqs=8, cache_size_gb=1.0))
    prompts = [list(range(5, 5 + n)) for n in (20, 33, 64, 70)]  # 1, 2, 2(+1), 3 blocks
    n_tokens = 24
    seen: list[tuple[EngineStats, list[int]]] = []  # stats, live sequence lengths
    lengths: dict[int, int] = {}
    lock = threading.Lock()
    done = threading.Event()
    events: dict[int, list[TokenEvent]] = {}

    def after() -> None:  # engine thread, after a round: the step's stats are current
        with lock:
            live = [n for rid, n in lengths.items() if not events[rid][-1].finished]
        if live and len(seen) < 200:
            seen.append((engine.stats(), live))

    def on_event(ev: TokenEvent) -> None:
        with lock:
            events.setdefault(ev.request_id, []).append(ev)
            lengths[ev.request_id] = ev.prompt_tokens + ev.output_tokens
            if all(e[-1].finished for e in events.values()) and len(events) == len(prompts):
                done.set()

    engine.after_events = after
    try:
        for p in prompts:
            rid = engine.submit(p, SamplingParams(max_tokens=n_tokens, min_tokens=n_tokens),
                                on_event)
            with lock:
                events.setdefault(rid, [])
                lengths[rid] = len(p)
        assert done.wait(TIMEOUT)
        final = engine.stats()
    finally:
        engine.close()

    pool = _pool_blocks(cpu_engine, 1, 4)  # f32 KV cache (EngineConfig's default)
    checked = 0
    for stats, live in seen:
        assert stats.kv_blocks is not None
        assert stats.kv_blocks.max == pool
        assert stats.kv_blocks.tokens_per == CPU_BLOCK_TOKENS
        if len(live) == len(prompts):  # every request live: each holds its tokens' blocks
            # A sequence caches the keys/values of the tokens run through the model: the prompt
            # and every generated token but the newest (it is the next step's input).
            need = sum(math.ceil((n - 1) / CPU_BLOCK_TOKENS) for n in live)
            assert stats.kv_blocks.used == need, (live, stats.kv_blocks)
            assert stats.held == len(prompts) and stats.scheduled == len(prompts)
            assert stats.not_scheduled == 0
            checked += 1
    assert checked, "no round saw every request live"
    # Every request finished once, by length, with the tokens the test received.
    got = sum(len(ev.token_ids) for evs in events.values() for ev in evs)
    assert got == len(prompts) * n_tokens
    finished = [r for st, _ in seen for r in st.finished] + final.finished
    assert sorted(r.prompt_tokens for r in finished) == sorted(len(p) for p in prompts)
    assert {r.finish_reason for r in finished} == {FINISH_LENGTH}
    assert all(r.output_tokens == n_tokens for r in finished)
    assert all(r.ttft_s is not None and 0 < r.ttft_s <= r.e2e_s for r in finished)
    assert all(r.tpot_s is not None and r.tpot_s > 0 for r in finished)
    assert final.generated_tokens_total == got
    assert final.prompt_tokens_total == sum(len(p) for p in prompts)
    assert final.steps >= n_tokens and final.last_step_unix_s > 0
    assert final.kv_blocks is not None and final.kv_blocks.used == 0  # all released


def test_a_cancelled_request_is_a_cancelled_finish(cpu_engine: Path) -> None:
    engine = CpuEngine(EngineConfig(cpu_engine, max_num_seqs=4))
    first = threading.Event()
    done = threading.Event()

    def on_event(ev: TokenEvent) -> None:
        if ev.token_ids:
            first.set()
        if ev.finished:
            done.set()

    try:
        rid = engine.submit(list(range(5, 25)), SamplingParams(max_tokens=500, min_tokens=500),
                            on_event)
        assert first.wait(TIMEOUT)
        engine.cancel(rid)
        assert done.wait(TIMEOUT)
        stats = engine.stats()
    finally:
        engine.close()
    assert [r.finish_reason for r in stats.finished] == [FINISH_CANCELLED]
    assert stats.finished[0].ttft_s is not None
