"""Model control (explicit load / unload): in which order to (re)load a repository's models.

Pure logic over model configs (as Triton's JSON), no server. A model *calls* another when
it is one of its ensemble steps or, for a Python (BLS) model, when a ``*_model_name``
parameter names it (``preprocessing_model_name``, ``tensorrt_llm_model_name``: the keys
NVIDIA's BLS model and ours read). :func:`load_plan` puts callees before callers, and leaves
an ensemble's steps to the ensemble's own load request: Triton loads an ensemble's composing
models with it (callees first) and then the ensemble once, whereas loading each composing
model alone reloads every ensemble that uses it once per model (see docs/deploy.md,
"Zero-loss model updates on one server").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tritonllm.client._errors import ClientError
from tritonllm.client._logic import ensemble_steps

__all__ = ["LoadStep", "load_plan", "model_calls"]

MODEL_NAME_SUFFIX = "_model_name"


def model_calls(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The models the model of ``config`` (Triton's JSON, with or without its ``config``
    wrapper) sends requests to: its ensemble steps, or the models its ``*_model_name``
    parameters name."""
    steps = ensemble_steps(config)
    if steps:
        return tuple(dict.fromkeys(steps))
    cfg = config.get("config", config)
    params = cfg.get("parameters") or {}
    named = []
    for key, value in sorted(params.items()):
        if key.endswith(MODEL_NAME_SUFFIX):
            name = value.get("string_value", "") if isinstance(value, Mapping) else str(value)
            if name.strip():
                named.append(name.strip())
    return tuple(dict.fromkeys(named))


@dataclass(frozen=True)
class LoadStep:
    """One load request: ``model``, and the composing models Triton loads with it."""

    model: str
    with_steps: tuple[str, ...] = ()


def load_plan(configs: Mapping[str, Mapping[str, Any]]) -> list[LoadStep]:
    """The load requests for the models of ``configs`` (name -> config), callees first.

    An ensemble's steps that are among ``configs`` are loaded by the ensemble's request;
    every other model gets one request, after every model it calls (ties by name). Raises
    ClientError when the models call each other in a cycle.
    """
    names = set(configs)
    calls = {n: [c for c in model_calls(configs[n]) if c in names and c != n] for n in names}
    owner: dict[str, str] = {}
    for n in sorted(names):
        for step in ensemble_steps(configs[n]):
            if step in names and step != n and step not in owner:
                owner[step] = n
    unit = {n: owner.get(n, n) for n in names}
    units = sorted(set(unit.values()))
    needs = {u: {unit[c] for n in names if unit[n] == u for c in calls[n]} - {u} for u in units}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(units):
        ready = [u for u in units if u not in done and needs[u] <= done]
        if not ready:
            left = sorted(set(units) - done)
            raise ClientError(f"load: models {', '.join(left)} call each other in a cycle; "
                              "load them one by one")
        order.append(ready[0])
        done.add(ready[0])
    return [LoadStep(u, tuple(_callees_first(u, configs, unit))) for u in order]


def _callees_first(u: str, configs: Mapping[str, Mapping[str, Any]],
                   unit: Mapping[str, str]) -> list[str]:
    """The steps ``u``'s request loads (those it owns), in the order Triton loads them."""
    return [s for s in ensemble_steps(configs[u]) if unit.get(s) == u and s != u]
