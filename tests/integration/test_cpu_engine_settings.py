"""``EngineConfig.dynamic_split_fuse`` on the real OpenVINO GenAI pipeline and the tiny model.

The unit tests (tests/unit/test_llm_model.py) show the setting reaching the SchedulerConfig;
this shows the pipeline acting on it: with split-fuse a prompt longer than
``max_num_batched_tokens`` is chunked over steps, without it the step fails. (CpuLLMParams
refuses that second configuration, so a served model never meets it.) Either way a prompt that
fits yields the same greedy tokens.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tritonllm.contract import FINISH_LENGTH
from tritonllm.ensembles.cpu_engine import FINISH_ERROR, CpuEngine, EngineConfig, TokenEvent
from tritonllm.ensembles.sampling import SamplingParams

pytestmark = pytest.mark.integration
TIMEOUT = 60
BUDGET = 16  # max_num_batched_tokens


def generate(engine_dir: Path, split_fuse: bool, prompt_len: int) -> TokenEvent:
    """The final event of one greedy 8-token request (tokens gathered into it)."""
    eng = CpuEngine(EngineConfig(engine_dir, max_num_seqs=4, max_num_batched_tokens=BUDGET,
                                 dynamic_split_fuse=split_fuse, num_threads=1))
    tokens: list[int] = []
    final: list[TokenEvent] = []
    done = threading.Event()

    def on_event(ev: TokenEvent) -> None:
        tokens.extend(ev.token_ids)
        if ev.finished:
            final.append(ev)
            done.set()

    try:
        eng.submit(list(range(5, 5 + prompt_len)), SamplingParams(max_tokens=8), on_event)
        assert done.wait(TIMEOUT)
    finally:
        eng.close()
    (ev,) = final
    ev.token_ids = tokens
    return ev


def test_a_prompt_that_fits_a_step_gives_the_same_tokens_either_way(cpu_engine: Path) -> None:
    on, off = (generate(cpu_engine, split_fuse, BUDGET) for split_fuse in (True, False))
    assert on.finish_reason == off.finish_reason == FINISH_LENGTH
    assert len(on.token_ids) == 8
    assert on.token_ids == off.token_ids


def test_only_split_fuse_takes_a_prompt_longer_than_a_step(cpu_engine: Path) -> None:
    fits, whole = (generate(cpu_engine, split_fuse, 2 * BUDGET + 8)
                   for split_fuse in (True, False))
    assert (fits.finish_reason, len(fits.token_ids), fits.error) == (FINISH_LENGTH, 8, None)
    assert whole.finish_reason == FINISH_ERROR and whole.token_ids == []
    assert whole.error is not None and "longer than max number of tokens" in whole.error
