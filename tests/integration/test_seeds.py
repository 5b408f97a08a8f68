"""Seeds on the real CPU engine (OpenVINO GenAI, the tiny model): every seed the engine takes
samples its own text, the same seed the same text, and no seed a fresh sample per request.

Sampling is at temperature 1.0 over the tiny random model's 1,000 ids, so two different random
streams give the same 16 tokens with negligible probability.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonllm.ensembles.cpu_engine import (
    MAX_SEED,
    CpuEngine,
    EngineConfig,
    TokenEvent,
)
from tritonllm.ensembles.sampling import SamplingParams

pytestmark = pytest.mark.integration
TIMEOUT = 60
PROMPT = [1, 50, 60, 70]


@pytest.fixture(scope="module")
def engine(cpu_engine: Path) -> Iterator[CpuEngine]:
    eng = CpuEngine(EngineConfig(cpu_engine, max_num_seqs=8, num_threads=1))
    yield eng
    eng.close()


def sample(engine: CpuEngine, seed: int | None) -> tuple[int, ...]:
    done = threading.Event()
    ids: list[int] = []
    errors: list[str] = []

    def on_event(ev: TokenEvent) -> None:
        ids.extend(ev.token_ids)
        if ev.error:
            errors.append(ev.error)
        if ev.finished:
            done.set()

    engine.submit(PROMPT, SamplingParams(max_tokens=16, temperature=1.0, seed=seed),
                  on_event, stream=False)
    assert done.wait(TIMEOUT), "request did not finish"
    assert not errors, errors
    return tuple(ids)


def test_the_same_seed_samples_the_same_text(engine: CpuEngine) -> None:
    for seed in (0, 7, MAX_SEED):
        assert sample(engine, seed) == sample(engine, seed)


def test_distinct_seeds_sample_distinct_texts(engine: CpuEngine) -> None:
    seeds = [0, 1, 2, 2**31, 2**31 + 1, MAX_SEED - 1, MAX_SEED]
    samples = [sample(engine, seed) for seed in seeds]
    assert len(set(samples)) == len(seeds), dict(zip(seeds, samples, strict=True))


def test_no_seed_samples_afresh_each_request(engine: CpuEngine) -> None:
    """Was: every unseeded request sampled seed 0's text (the engine's default rng_seed)."""
    samples = [sample(engine, None) for _ in range(4)]
    assert len(set(samples)) == 4
    assert sample(engine, 0) not in samples
