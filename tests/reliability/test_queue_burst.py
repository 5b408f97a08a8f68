"""A burst of 300 streams against the bounded engine queue (issue #14).

The session's server runs SLOTS requests in the CPU engine and lets QUEUE wait; everything
beyond is refused at once with UNAVAILABLE "Exceeds maximum queue size". 240 gRPC streams (each
its own ``ModelStreamInfer`` call, as NVIDIA's clients open them, all on one asyncio loop) and
60 HTTP ``generate_stream`` requests go out together, alternately to the ensemble and the BLS
model, streamed and not. Every request asks for exactly TOKENS tokens.

Checked per request, on the wire (raw protobuf responses with Triton's final flag, raw SSE
events): exactly one outcome, never both, never none before the deadline:

* completed: one final response (gRPC ``triton_final_response``; HTTP the end of the event
  stream), exactly one response carrying a ``finish_reason`` ("length"), nothing after it; or
* refused: one error naming the full queue (gRPC: the stream's only response; HTTP: the only
  event, or a 4xx/5xx status), no text before it.

And for the burst: every request accounted for, at least SLOTS + QUEUE completed and at least one
refused (the bound worked), afterwards the engine idle (no slot leaked), the same processes
alive, and a new request served.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from harness import (
    ALL_MODELS,
    MODELS,
    QUEUE,
    SLOTS,
    Served,
    Snapshot,
    liveness_problems,
    wait_engine_idle,
)

from tritonllm.client import LLMClient

pytestmark = pytest.mark.integration

GRPC_STREAMS, HTTP_STREAMS = 240, 60
TOKENS = 200  # min_tokens too: a request holds its slot for a while (~0.5 s for four)
DEADLINE_S = 120.0  # for the whole burst
QUEUE_FULL = re.compile(r"Exceeds maximum queue size")


@dataclass
class Record:
    """What one request of the burst got, in order."""

    index: int
    transport: str
    model: str
    streamed: bool
    events: list[tuple[str, str]] = field(default_factory=list)  # (kind, detail)
    status: int | None = None  # HTTP
    lost: bool = False  # nothing ended it before the deadline
    failure: str = ""  # the client itself failed (connection, ...)

    def __str__(self) -> str:
        events = ", ".join(f"{k}:{d[:80]}" for k, d in self.events[-4:])
        return (f"#{self.index} {self.transport} {self.model} streamed={self.streamed} "
                f"status={self.status} lost={self.lost} {self.failure} [{events}]")

    def verdict(self) -> str:
        """"completed", "refused" or what is wrong."""
        if self.lost:
            return "lost: no end before the deadline"
        if self.failure:
            return f"client failure: {self.failure}"
        kinds = [k for k, _ in self.events]
        errors = [d for k, d in self.events if k == "error"]
        finals = [d for k, d in self.events if k == "finish"]
        ends = kinds.count("end")
        if errors:
            if kinds != ["error"]:
                return f"an error beside other responses: {kinds}"
            if not QUEUE_FULL.search(errors[0]):
                return f"refused, but not for the full queue: {errors[0][:200]}"
            return "refused"
        if self.status is not None and self.status != 200:
            return f"HTTP {self.status} without an error"
        if ends != 1 or kinds[-1] != "end":
            return f"{ends} final responses"
        if finals != ["length"]:
            return f"finish reasons {finals}, not one 'length'"
        last_finish = max(i for i, k in enumerate(kinds) if k == "finish")
        if any(k == "text" for k in kinds[last_finish + 1:]):
            return "text after the finish"
        return "completed"


def _request(model: str, index: int, streamed: bool) -> Any:
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    r = service_pb2.ModelInferRequest(model_name=model, id=f"burst-{index}")
    values: list[tuple[str, str, np.ndarray]] = [
        ("text_input", "BYTES", np.array([[f"burst {index}".encode()]], dtype=object)),
        ("max_tokens", "INT32", np.array([[TOKENS]], np.int32)),
        ("min_tokens", "INT32", np.array([[TOKENS]], np.int32)),
        ("stream", "BOOL", np.array([[streamed]])),
    ]
    for name, dtype, value in values:
        t = r.inputs.add()
        t.name, t.datatype = name, dtype
        t.shape.extend(value.shape)
        raw = bytes(serialize_byte_tensor(value).item()) if dtype == "BYTES" else value.tobytes()
        r.raw_input_contents.append(raw)
    r.parameters["triton_enable_empty_final_response"].bool_param = True
    return r


def _finish_reason(response: Any) -> str | None:
    from tritonclient.utils import deserialize_bytes_tensor

    for i, out in enumerate(response.outputs):
        if out.name == "finish_reason" and i < len(response.raw_output_contents):
            values = deserialize_bytes_tensor(response.raw_output_contents[i])
            return bytes(values.reshape(-1)[0]).decode() if values.size else ""
    return None


async def _grpc(stub: Any, rec: Record) -> None:
    call = stub.ModelStreamInfer(iter([_request(rec.model, rec.index, rec.streamed)]))
    try:
        async for message in call:
            if message.error_message:
                rec.events.append(("error", message.error_message))
                continue
            response = message.infer_response
            if any(o.name == "text_output" for o in response.outputs):
                rec.events.append(("text", response.id))
            reason = _finish_reason(response)
            if reason:
                rec.events.append(("finish", reason))
            if response.parameters["triton_final_response"].bool_param:
                rec.events.append(("end", response.id))
    except Exception as e:  # recorded: the checks report it
        rec.failure = f"{type(e).__name__}: {e}"


async def _http(session: Any, url: str, rec: Record) -> None:
    body = {"text_input": f"burst {rec.index}", "max_tokens": TOKENS, "min_tokens": TOKENS,
            "stream": rec.streamed}
    try:
        async with session.post(f"{url}/v2/models/{rec.model}/generate_stream",
                                json=body) as response:
            rec.status = response.status
            async for raw in response.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line.removeprefix("data:"))
                if "error" in event:
                    rec.events.append(("error", str(event["error"])))
                    continue
                rec.events.append(("text", ""))
                if event.get("finish_reason"):
                    rec.events.append(("finish", event["finish_reason"]))
            if rec.status == 200:
                rec.events.append(("end", ""))
    except Exception as e:
        rec.failure = f"{type(e).__name__}: {e}"


async def _burst(served: Served) -> tuple[list[Record], float]:
    import aiohttp
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    records = [Record(i, "grpc" if i < GRPC_STREAMS else "http", MODELS[i % 2], i % 4 < 2)
               for i in range(GRPC_STREAMS + HTTP_STREAMS)]
    channel = grpc.aio.insecure_channel(served.server.grpc_address)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    connector = aiohttp.TCPConnector(limit=0)
    start = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.ensure_future(
            _grpc(stub, r) if r.transport == "grpc" else _http(session, served.server.url_http,
                                                               r)) for r in records]
        _done, pending = await asyncio.wait(tasks, timeout=DEADLINE_S)
        for task in pending:
            task.cancel()
        for r, task in zip(records, tasks, strict=True):
            if task in pending:
                r.lost = True
    seconds = time.monotonic() - start
    await channel.close()
    return records, seconds


def test_a_burst_of_300_streams_gets_one_outcome_each(bounded: Served,
                                                      good_client: LLMClient) -> None:
    before = Snapshot.take(bounded.server)
    wait_engine_idle(bounded.server)
    records, seconds = asyncio.run(_burst(bounded))
    verdicts = {r.index: r.verdict() for r in records}
    wrong = [f"{r}: {verdicts[r.index]}" for r in records
             if verdicts[r.index] not in ("completed", "refused")]
    completed = sum(v == "completed" for v in verdicts.values())
    refused = sum(v == "refused" for v in verdicts.values())
    by_kind = {(t, v): sum(r.transport == t and verdicts[r.index] == v for r in records)
               for t in ("grpc", "http") for v in ("completed", "refused")}
    print(f"\nburst: {len(records)} requests in {seconds:.1f}s: {completed} completed, "
          f"{refused} refused; {by_kind}")
    assert not wrong, f"{len(wrong)} requests without exactly one outcome:\n" + "\n".join(
        wrong[:20])
    assert completed + refused == len(records) == GRPC_STREAMS + HTTP_STREAMS
    assert completed >= SLOTS + QUEUE, "fewer completed than the engine holds"
    assert refused >= 1, "nothing was refused: the queue bound never applied"
    wait_engine_idle(bounded.server)  # no slot or queue entry leaked
    problems = liveness_problems(bounded.server, before, ALL_MODELS)
    assert not problems, problems
    for model in MODELS:
        assert good_client.generate("after the burst", 8, model=model).text
