"""How one request is to be generated: the one sampling type, from the wire to the engine.

:func:`tritonllm.ensembles.requests.parse_request` fills a :class:`SamplingParams` from a
request's tensors (validated, ranges checked) and keeps it on the
:class:`~tritonllm.ensembles.requests.GenerationRequest`; an engine takes it as it is, once
:meth:`~tritonllm.ensembles.requests.GenerationRequest.sampling_for` has set what the engine
decides (its end ids). None means the request did not set a knob: the engine's default applies.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SamplingParams"]


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings of one request.

    ``max_tokens`` new tokens at most, ``min_tokens`` at least (EOS is suppressed until then).
    ``end_ids``: generation stops after any of them (empty: never on an end id);
    ``stop_ids``: token sequences that stop generation once produced. ``top_k`` 0 is no top-k
    bound, as in TensorRT-LLM. Sampling happens when ``temperature > 0`` together with
    ``top_k != 1``, or when top_k > 1 or top_p < 1 is asked for; everything else is greedy
    (TensorRT-LLM's default as well). ``seed`` makes sampling repeatable; without one each
    request samples with a fresh random seed.
    """

    max_tokens: int
    min_tokens: int = 0
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    length_penalty: float | None = None
    beam_width: int = 1
    num_return_sequences: int = 1
    end_ids: tuple[int, ...] = ()
    stop_ids: tuple[tuple[int, ...], ...] = ()
    return_log_probs: bool = False

    @property
    def do_sample(self) -> bool:
        if self.temperature == 0.0 or self.top_k == 1:
            return False
        return ((self.temperature is not None and self.temperature > 0)
                or (self.top_k is not None and self.top_k > 1)
                or (self.top_p is not None and self.top_p < 1.0))
