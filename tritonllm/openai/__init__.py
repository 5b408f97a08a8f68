"""The OpenAI-compatible front: a separate process that speaks gRPC to any tritonserver serving
the tensorrtllm_backend contract (ours or NVIDIA's), over :class:`tritonllm.client.AsyncLLMClient`.

Layers (as vLLM's ``entrypoints/openai``): wire types (:mod:`.protocol`), logic (:mod:`.serving`),
routes (:mod:`.app`); the chat template (:mod:`.chat_template`), the front's metrics
(:mod:`.metrics`), and the assembly the CLI runs (:mod:`.server`). ``tritonllm openai --help``.
"""
