"""Response tensors in the shapes NVIDIA's models put on the wire, read from the contract.

:mod:`tritonllm.contract` says per output whether a response carries the batch dimension
(``Tensor.wire``, "Shapes on the wire" there); the models build their string outputs here so
that the shape lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonllm.contract import get_output


def strings(model: str, name: str, values: Sequence[str | bytes]) -> npt.NDArray[np.object_]:
    """``model``'s output ``name`` holding ``values`` (one per sequence) in its wire shape.

    ``[len(values)]`` for the outputs NVIDIA sends 1-D (``text_output``, ``OUTPUT``,
    ``finish_reason``), ``[1, len(values)]`` for the others.
    """
    arr = np.array([v if isinstance(v, bytes) else v.encode() for v in values], dtype=np.object_)
    return arr if not get_output(model, name).batched_on_wire else arr.reshape(1, -1)


def first_string(value: Any) -> str:
    """The first string of a string output in any of its wire shapes ("" when empty)."""
    flat = np.asarray(value).reshape(-1)
    if not flat.size:
        return ""
    v = flat[0]
    return v.decode() if isinstance(v, bytes) else str(v)
