"""The bad-input matrix (issue #14): every case of bad_inputs.py, for the ensemble and the BLS
model, over gRPC (a stream, as NVIDIA's clients call decoupled models) and HTTP (Triton's
``generate`` and ``generate_stream`` JSON endpoints) where the case can be said there.

Each run checks, on the session's real tritonserver:

1. the bad request is refused, naming the field: gRPC, the stream's error message names it
   (Triton sends a stream error without a status code); HTTP, a 4xx status and the field in
   the body; within the case's bound (2 s for hostile sizes, 10 s otherwise);
2. a good streamed request on the same model, in flight while the bad one is sent (its first
   token arrived before), completes with all its tokens;
3. tritonserver and every stub of its process group are the same live processes as before the
   case (pid and start time), and the ready endpoints answer 200.

Raw ``/v2/models/<m>/infer`` JSON does not apply: both models are decoupled and Triton 2.51's
HTTP infer answers every request to them with 501 before reading its inputs
(test_raw_infer_json_is_refused_for_decoupled_models checks that).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from bad_inputs import Case, describe, http_body, matrix, xfail_reason
from harness import ALL_MODELS, Served, Snapshot, grpc_exchange, http_post, liveness_problems

from tritonllm.client import LLMClient

pytestmark = pytest.mark.integration

GOOD_PROMPT, GOOD_TOKENS = "Once upon a time", 24


def _params() -> list[Any]:
    out = []
    for model, transport, case in matrix():
        reason = xfail_reason(model, transport, case)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(model, transport, case, marks=marks,
                                id=f"{model}-{transport}-{case.id}"))
    return out


def names(message: str, field: str) -> bool:
    """Whether ``message`` names ``field`` (as a whole word when it is an identifier)."""
    if field.isidentifier():
        return re.search(rf"(?<![A-Za-z0-9_]){re.escape(field)}(?![A-Za-z0-9_])",
                         message) is not None
    return field in message


def _refusal_problems(model: str, transport: str, case: Case, served: Served) -> list[str]:
    """Send the case; what is wrong with the answer (empty: a clear, timely refusal)."""
    server = served.server
    if transport == "grpc":
        assert case.wires is not None
        got = grpc_exchange(server.grpc_address, model, case.wires, case.request_id,
                            timeout=case.within_s + 30)
        if got.timed_out:
            return [f"no answer within {case.within_s + 30:g}s"]
        message, seconds = got.error, got.seconds
        if message is None:
            return [f"served instead of refused: {''.join(got.texts)[:200]!r}"]
        problems = []
    else:
        path = "generate" if transport == "http" else "generate_stream"
        start = time.monotonic()
        status, body = http_post(f"{server.url_http}/v2/models/{model}/{path}",
                                 http_body(model, case), timeout=case.within_s + 30)
        seconds = time.monotonic() - start
        message = body.decode("utf-8", "replace")
        problems = [] if 400 <= status < 500 else [f"HTTP {status}, not 4xx: {message[:300]}"]
        payload = message.removeprefix("data: ").strip()
        try:
            error = json.loads(payload).get("error") if payload else None
        except (ValueError, AttributeError):
            error = None
        if not isinstance(error, str):
            problems.append(f"no JSON error in the body: {message[:300]!r}")
    if case.fields and not any(names(message, f) for f in case.fields):
        problems.append(f"the error does not name {' or '.join(case.fields)}: "
                        f"{message[:300]!r}")
    if seconds > case.within_s:
        problems.append(f"refused after {seconds:.2f}s, more than {case.within_s:g}s")
    return problems


@pytest.mark.parametrize(("model", "transport", "case"), _params())
def test_bad_input(bounded: Served, good_client: LLMClient, model: str, transport: str,
                   case: Case) -> None:
    before = Snapshot.take(bounded.server)
    good = good_client.stream(GOOD_PROMPT, GOOD_TOKENS, model=model, min_tokens=GOOD_TOKENS)
    problems: list[str] = []
    try:
        next(good)  # the good request is in flight
        problems += _refusal_problems(model, transport, case, bounded)
        for _ in good:
            pass
        done = good.completion
        if done is None or done.output_tokens not in (None, GOOD_TOKENS) or not done.text:
            problems.append(f"the good request did not complete: {done}")
    except Exception as e:  # reported with the rest
        problems.append(f"the good request failed: {type(e).__name__}: {e}")
    finally:
        good.close()
    problems += liveness_problems(bounded.server, before, ALL_MODELS)
    assert not problems, f"{model} {transport} {case.id} [{describe(case)}]:\n" + "\n".join(
        problems)


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_raw_infer_json_is_refused_for_decoupled_models(bounded: Served, model: str) -> None:
    """Triton's plain HTTP infer does not serve decoupled models: a clear 501, whatever the
    inputs (a bad dtype here), and the server carries on."""
    before = Snapshot.take(bounded.server)
    body = json.dumps({"inputs": [
        {"name": "text_input", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]},
        {"name": "max_tokens", "shape": [1, 1], "datatype": "FP32", "data": [1.5]}]}).encode()
    status, answer = http_post(f"{bounded.server.url_http}/v2/models/{model}/infer", body)
    assert status == 501 and b"decoupled" in answer, (status, answer)
    assert not liveness_problems(bounded.server, before, ALL_MODELS)
