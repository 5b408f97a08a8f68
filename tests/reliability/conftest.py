"""Fixtures of the reliability suite: one served CPU repository with a bounded engine queue.

The session's ``bounded`` server serves the tiny CPU engine with ``max_batch_size`` =
:data:`SLOTS` and ``max_queue_size`` = :data:`QUEUE` (on CPU the engine enforces the queue
bound itself and refuses with UNAVAILABLE "Exceeds maximum queue size"), one instance of every
Python model and one OpenVINO thread. The bad-input matrix, the burst and the soak share it;
the modules that kill or stop a server start their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bad_inputs import LIMITS
from harness import QUEUE, SLOTS, Served, engine_limits, ready_snapshot, render, server_options

from tritonllm.client import LLMClient, RetryPolicy


@pytest.fixture(scope="session")
def bounded(cpu_engine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from tritonllm.server import TritonServer

    # The matrix is generated at collection time from the tiny model's limits: the engine
    # must have those.
    assert engine_limits(cpu_engine) == LIMITS
    repo = render(cpu_engine, tmp_path_factory.mktemp("bounded") / "repo",
                  max_batch_size=SLOTS, max_queue_size=QUEUE)
    with TritonServer(server_options(repo)) as server:
        yield Served(server, repo, ready_snapshot(server))


@pytest.fixture(scope="session")
def good_client(bounded: Served) -> Iterator[LLMClient]:
    """Our gRPC client, no retries: it sends the good requests beside the bad ones."""
    with LLMClient(bounded.server.grpc_address, timeout=60,
                   retry=RetryPolicy(attempts=1)) as client:
        yield client
