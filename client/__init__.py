"""Client library for tritonllm (and any tensorrtllm_backend) model repositories.

    from tritonllm.client import LLMClient

    with LLMClient("localhost:8001", model="ensemble") as c:
        print(c.generate("The capital of France is", max_tokens=16, temperature=0.0).text)
        for delta in c.stream("Once upon a time", max_tokens=64):
            print(delta.text, end="", flush=True)
        vectors = c.embed(["first text", "second text"])  # the "embedding" model

The client speaks both request contracts of a repository: the classic ``ensemble`` /
``tensorrt_llm_bls`` one and NVIDIA's ``llmapi`` one, picked per model from its metadata
(``contract="auto"``, the default) or forced (``"classic"``, ``"llmapi"``).
:class:`AsyncLLMClient` is the asyncio twin. Errors form one tree under :class:`ClientError`
(see :mod:`tritonllm.client._errors`). Layers: ``_types`` (results), ``_errors``, ``_logic``
(sans-IO requests, responses, retries) and ``_embed`` (sans-IO ``embed()`` requests),
``_transport`` (tritonclient gRPC / gRPC aio / HTTP), ``_sync`` and ``_async`` (the clients).
Importing this package does not import tritonclient; creating a client does.
"""

from tritonllm.client._async import AsyncLLMClient, AsyncStream
from tritonllm.client._errors import (
    Cancelled,
    ClientError,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    ServerError,
    Timeout,
    Unauthorized,
    Unavailable,
)
from tritonllm.client._logic import CONTRACT_CHOICES, LLMAPI_SAMPLING_INPUTS, SAMPLING_INPUTS
from tritonllm.client._sync import LLMClient, Stream
from tritonllm.client._types import (
    Completion,
    Delta,
    Embeddings,
    Health,
    ModelStatus,
    RetryPolicy,
    Timings,
)

__all__ = [
    "CONTRACT_CHOICES",
    "LLMAPI_SAMPLING_INPUTS",
    "SAMPLING_INPUTS",
    "AsyncLLMClient",
    "AsyncStream",
    "Cancelled",
    "ClientError",
    "Completion",
    "Delta",
    "Embeddings",
    "Health",
    "InvalidRequest",
    "LLMClient",
    "ModelNotFound",
    "ModelStatus",
    "Overloaded",
    "RetryPolicy",
    "ServerError",
    "Stream",
    "Timeout",
    "Timings",
    "Unauthorized",
    "Unavailable",
]
