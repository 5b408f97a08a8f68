"""Check a Triton model repository before ``tritonserver`` loads it; report every problem at once.

``validate_repository(repo)`` returns a list of :class:`Problem` (empty: clean), each printed
as ``model/file: field: problem``. It never stops at the first problem and never raises for
the repository's content (only when ``repo`` is not a directory). What it checks:

* every model folder has a ``config.pbtxt`` that parses into Triton's ``ModelConfig``, with no
  leftover ``${placeholder}`` or jinja tag, and a ``name`` matching its folder;
* the known models declare the tensors of :mod:`tritonllm.contract` (name, dtype, dims,
  optional) and nothing else;
* the ensemble, as Triton checks it at load time: steps name existing models and tensors,
  required inputs are mapped, dtypes and dims agree along every edge, every ensemble input is
  used, every output is written, no intermediate tensor is left unused, no instance groups,
  batch sizes fit, and a step never mixes inputs from different decoupled models;
* streaming agrees: a declared streaming ensemble (or BLS) over a non-decoupled LLM, and the
  reverse; Python models' ``streaming`` parameter against their transaction policy; on a
  streaming CPU repository postprocessing has no dynamic batching and one instance (so that it
  sees cancelled streams);
* the Python models: ``N/model.py`` exists for the newest version N (the one Triton serves and
  the configs describe; older version folders may stay), parameters parse
  (:mod:`tritonllm.settings`);
* the engine: files present, its kind matches the LLM backend, and ``max_batch_size`` and the
  input/sequence limits in the configs do not exceed the engine's (``manifest.json``);
* the tokenizer: present where ``tokenizer_dir`` says; end/pad ids agree with its
  ``generation_config.json`` / ``tokenizer_config.json`` and fit the vocabulary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonllm import contract as C
from tritonllm.builders.manifest import MANIFEST, Manifest, read_manifest
from tritonllm.errors import ConfigError, RepositoryError
from tritonllm.settings import (
    BATCHING_STRATEGIES,
    ENGINE_TARGETS,
    LLMAPI_LAYOUT_PARAMS,
    LOGITS_DATATYPES,
    PARAMS_BY_MODEL,
    flatten_parameters,
    parse_bool,
    resolve_path,
)

CONFIG = "config.pbtxt"
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}|\{\{.*?\}\}|\{%.*?%\}")
_PARAM_KEY = re.compile(r"parameter '([^']+)'")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
_CPU_ENGINE_FILES = ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml",
                     "openvino_detokenizer.xml")


@dataclass(frozen=True)
class Problem:
    """One problem: where (model folder, file in it, field) and what."""

    model: str
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.model}/{self.file}: {self.field}: {self.message}"


@dataclass
class _Model:
    name: str
    path: Path
    config: Any  # ModelConfig, or None if it did not parse

    @property
    def decoupled(self) -> bool:
        return bool(self.config.model_transaction_policy.decoupled)

    @property
    def params(self) -> dict[str, str]:
        return {k: v.string_value for k, v in self.config.parameters.items()}

    @property
    def is_python(self) -> bool:
        return str(self.config.backend) == "python"


def _newest(model_dir: Path) -> str:
    """The version folder Triton serves (the highest; the configs describe it), "1" if none."""
    from tritonllm.builders.repository import version_dirs

    return str(max(version_dirs(model_dir.parent, model_dir.name), default=1))


def _dims(values: Any) -> list[int]:
    return [int(d) for d in values]


def _dtype(config_dtype: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return str(model_config_pb2.DataType.Name(config_dtype)).removeprefix("TYPE_")


def _dims_match(a: list[int], b: list[int]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


class _Validator:
    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.problems: list[Problem] = []
        self.models: dict[str, _Model] = {}
        self.unparsable: set[str] = set()  # folders whose config.pbtxt did not parse
        self.manifest: Manifest | None = None
        self.embedding: dict[str, _Model] = {}  # the embedding models (tritonllm.contract)

    def add(self, model: str, file: str, field: str, message: str) -> None:
        p = Problem(model, file, field, message)
        if p not in self.problems:
            self.problems.append(p)

    # --- loading -----------------------------------------------------------------------------

    def load(self) -> None:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2

        for d in sorted(p for p in self.repo.iterdir() if p.is_dir()):
            if d.name.startswith("."):
                continue
            cfg_path = d / CONFIG
            if not cfg_path.is_file():
                self.add(d.name, CONFIG, "file", "missing (Triton cannot load this folder)")
                continue
            text = cfg_path.read_text(encoding="utf-8", errors="replace")
            for lineno, line in enumerate(text.splitlines(), 1):
                for m in _PLACEHOLDER.finditer(line):
                    self.add(d.name, CONFIG, f"line {lineno}", f"unfilled placeholder {m.group(0)}")
            try:
                config = text_format.Parse(text, model_config_pb2.ModelConfig())
            except text_format.ParseError as e:
                where = f"line {e.GetLine()}" if e.GetLine() else "syntax"
                msg = str(e).split(" : ", 1)[-1]
                self.add(d.name, CONFIG, where, f"not a valid Triton ModelConfig: {msg}")
                self.unparsable.add(d.name)
                continue
            if config.name and config.name != d.name:
                self.add(d.name, CONFIG, "name",
                         f"{config.name!r} does not match its folder {d.name!r}")
            model = _Model(d.name, d, config)
            if d.name in C.EMBEDDING_CONTRACTS:
                self.embedding[d.name] = model
            else:
                self.models[d.name] = model
        if self.embedding and not self.models:
            return  # an embedding repository: no LLM models to expect
        needed = ((C.ENSEMBLE, C.LLM) if self.layout == C.LAYOUT_LLMAPI
                  else (C.ENSEMBLE, C.PREPROCESSING, C.LLM, C.POSTPROCESSING))
        for name in needed:
            if name not in self.models and not (self.repo / name).is_dir():
                self.add(name, CONFIG, "file", "missing: the ensemble needs this model")

    @property
    def layout(self) -> str:
        """The llmapi layout when ``tensorrt_llm`` takes text (the llmapi contract)."""
        llm = self.models.get(C.LLM)
        if llm is not None and any(t.name == C.LLMAPI_IN.text_input for t in llm.config.input):
            return C.LAYOUT_LLMAPI
        return C.LAYOUT_CLASSIC

    @property
    def target(self) -> str | None:
        llm = self.models.get(C.LLM)
        if llm is None:
            return None
        if self.layout == C.LAYOUT_LLMAPI and str(llm.config.backend) == "python":
            # NVIDIA's llmapi model on a GPU is configured by its model.yaml
            return "gpu" if (llm.path / _newest(llm.path) / C.LLMAPI_MODEL_YAML).is_file() \
                else "cpu"
        return {"tensorrtllm": "gpu", "python": "cpu"}.get(str(llm.config.backend))

    # --- per model ---------------------------------------------------------------------------

    def check_models(self) -> None:
        llmapi_layout = self.layout == C.LAYOUT_LLMAPI
        for m in self.models.values():
            if m.name in C.UNBATCHED_MODELS or (llmapi_layout and m.name == C.LLM):
                if m.config.max_batch_size != 0:
                    self.add(m.name, CONFIG, "max_batch_size",
                             f"{m.config.max_batch_size}: must be 0 (unbatched, as NVIDIA's "
                             "model: its clients send whole shapes)")
            elif m.config.max_batch_size < 1:
                self.add(m.name, CONFIG, "max_batch_size",
                         f"{m.config.max_batch_size}: must be > 0 (requests are shaped [1, ...])")
            if m.name == C.ENSEMBLE and not llmapi_layout:
                self.check_ensemble_model(m)
            elif m.name == C.LLM and not llmapi_layout:
                self.check_llm_model(m)
            elif (m.name in (C.PREPROCESSING, C.POSTPROCESSING, C.BLS, C.LLMAPI)
                  or llmapi_layout) and not m.is_python:
                self.add(m.name, CONFIG, "backend", f"{m.config.backend!r}: expected \"python\"")
            if m.is_python:
                model_py = f"{_newest(m.path)}/model.py"  # the version Triton serves
                if not (m.path / model_py).is_file():
                    self.add(m.name, model_py, "file", "missing (a Python-backend model needs it)")
                self.check_python_params(m)
            if m.name in C.CONTRACTS and self.target is not None:
                self.check_contract(m)

    def check_ensemble_model(self, m: _Model) -> None:
        if m.config.platform != "ensemble":
            self.add(m.name, CONFIG, "platform", f"{m.config.platform!r}: expected \"ensemble\"")
        if len(m.config.instance_group):
            self.add(m.name, CONFIG, "instance_group",
                     "an ensemble must not have instance groups (Triton refuses to load it)")
        if not m.config.HasField("ensemble_scheduling"):
            self.add(m.name, CONFIG, "ensemble_scheduling", "missing")

    def check_llm_model(self, m: _Model) -> None:
        backend = str(m.config.backend)
        if backend not in ("tensorrtllm", "python"):
            self.add(m.name, CONFIG, "backend",
                     f"{backend!r}: expected \"tensorrtllm\" (gpu) or \"python\" (cpu)")
            return
        if backend == "python":
            return
        params = m.params
        for key in params:
            if key not in C.TRTLLM_PARAMETER_KEYS:
                self.add(m.name, CONFIG, f"parameters.{key}",
                         "not a parameter of the tensorrtllm backend")
        if not params.get("gpt_model_path"):
            self.add(m.name, CONFIG, "parameters.gpt_model_path", "missing")
        strategy = params.get("gpt_model_type", "")
        if strategy not in BATCHING_STRATEGIES:
            self.add(m.name, CONFIG, "parameters.gpt_model_type",
                     f"{strategy!r}: expected one of {', '.join(BATCHING_STRATEGIES)}")
        for key in ("exclude_input_in_output", "enable_kv_cache_reuse", "enable_chunked_context",
                    "normalize_log_probs"):
            if key in params:
                try:
                    parse_bool(key, params[key])
                except ConfigError as e:
                    self.add(m.name, CONFIG, f"parameters.{key}", str(e).split(": ", 1)[-1])

    def check_python_params(self, m: _Model) -> None:
        table = (LLMAPI_LAYOUT_PARAMS if self.layout == C.LAYOUT_LLMAPI
                 and m.name not in C.EMBEDDING_CONTRACTS else PARAMS_BY_MODEL)
        cls = table.get(m.name)
        if self.layout == C.LAYOUT_LLMAPI and m.name == C.LLM and self.target == "gpu":
            cls = None  # NVIDIA's llmapi model reads model.yaml, not parameters
        if cls is None:
            return
        raw = flatten_parameters({k: {"string_value": v} for k, v in m.params.items()})
        try:
            parsed = cls.from_triton_parameters(raw, model_dir=m.path)
        except ConfigError as e:
            msg = str(e).removeprefix(f"{cls.MODEL}: ")
            if "placeholder" in msg or _PLACEHOLDER.search(msg):
                return  # reported with its line already
            key = _PARAM_KEY.search(msg)
            if key is None:
                self.add(m.name, CONFIG, "parameters", msg)
            else:
                msg = msg.removeprefix(f"parameter {key.group(1)!r}").lstrip(": ")
                self.add(m.name, CONFIG, f"parameters.{key.group(1)}", msg)
            return
        streaming = getattr(parsed, "streaming", None)
        if streaming is not None and streaming != m.decoupled:
            self.add(m.name, CONFIG, "parameters.streaming",
                     f"{str(streaming).lower()} but model_transaction_policy.decoupled is "
                     f"{str(m.decoupled).lower()}")

    def check_contract(self, m: _Model) -> None:
        assert self.target is not None
        models = C.TargetModels(self.target, layout=self.layout)
        if m.name not in models.names:
            self.add(m.name, CONFIG, "name", f"not a model of the {self.layout} layout")
            return
        self.check_tensors(m, models[m.name])

    def check_tensors(self, m: _Model, want: C.ModelContract) -> None:
        """``m``'s inputs and outputs against the contract ``want``."""
        for kind, declared, expected in (("input", m.config.input, want.inputs),
                                         ("output", m.config.output, want.outputs)):
            have = {t.name: t for t in declared}
            names = [t.name for t in declared]
            for dup in sorted({n for n in names if names.count(n) > 1}):
                self.add(m.name, CONFIG, f"{kind}.{dup}", "declared more than once")
            for t in expected:
                got = have.get(t.name)
                if got is None:
                    why = ("clients sending it would be rejected" if t.optional
                           else "required by the contract")
                    self.add(m.name, CONFIG, f"{kind}.{t.name}", f"missing ({why})")
                    continue
                dtype = _dtype(got.data_type)
                ok_dtype = (dtype in LOGITS_DATATYPES if t.name in C.LOGITS_TENSORS
                            else dtype == t.dtype)
                if not ok_dtype:
                    self.add(m.name, CONFIG, f"{kind}.{t.name}.data_type",
                             f"TYPE_{dtype}, the contract says {t.triton_dtype}")
                if _dims(got.dims) != list(t.dims):
                    self.add(m.name, CONFIG, f"{kind}.{t.name}.dims",
                             f"{_dims(got.dims)}, the contract says {list(t.dims)}")
                if kind == "input" and bool(got.optional) != t.optional:
                    self.add(m.name, CONFIG, f"{kind}.{t.name}.optional",
                             f"{str(bool(got.optional)).lower()}, the contract says "
                             f"{str(t.optional).lower()}")
            known = {t.name for t in expected}
            for name in names:
                if name not in known:
                    self.add(m.name, CONFIG, f"{kind}.{name}", "not in the contract")

    # --- ensemble graph ----------------------------------------------------------------------

    def check_ensemble_graph(self) -> None:
        ens = self.models.get(C.ENSEMBLE)
        if ens is None or not ens.config.HasField("ensemble_scheduling"):
            return
        cfg = ens.config
        batching = cfg.max_batch_size > 0
        # tensor name -> (dtype, dims, full dims, origin)
        tensors: dict[str, tuple[str, list[int], list[int], str]] = {}
        for t in cfg.input:
            dims = _dims(t.reshape.shape) if t.HasField("reshape") else _dims(t.dims)
            tensors[t.name] = (_dtype(t.data_type), dims, ([-1] if batching else []) + dims,
                               "ensemble input")
        outputs = {t.name: t for t in cfg.output}
        consumers: dict[str, int] = {}
        producers: dict[str, str] = {}
        # decoupled labels, as Triton assigns them: 0 = not from a decoupled model
        labels: dict[str, int] = {t.name: 0 for t in cfg.input}
        next_label = 0
        any_decoupled = False

        def unify(name: str, spec: tuple[str, list[int], list[int], str], field: str) -> None:
            seen = tensors.get(name)
            if seen is None:
                tensors[name] = spec
                return
            if seen[0] != spec[0]:
                self.add(C.ENSEMBLE, CONFIG, field,
                         f"tensor {name!r}: TYPE_{spec[0]} in {spec[3]} but TYPE_{seen[0]} "
                         f"in {seen[3]}")
            elif not (_dims_match(seen[1], spec[1]) or _dims_match(seen[2], spec[2])):
                self.add(C.ENSEMBLE, CONFIG, field,
                         f"tensor {name!r}: dims {spec[2]} in {spec[3]} but {seen[2]} "
                         f"in {seen[3]}")

        for i, step in enumerate(cfg.ensemble_scheduling.step):
            where = f"ensemble_scheduling.step[{i}]"
            model = self.models.get(step.model_name)
            if model is None:
                if step.model_name not in self.unparsable:
                    self.add(C.ENSEMBLE, CONFIG, f"{where}.model_name",
                             f"model {step.model_name!r} is not in the repository")
                for _key, value in step.input_map.items():
                    consumers[value] = consumers.get(value, 0) + 1
                for _key, value in step.output_map.items():
                    producers[value] = step.model_name
                    labels[value] = -1
                continue
            mcfg = model.config
            if 0 < mcfg.max_batch_size < cfg.max_batch_size:
                self.add(C.ENSEMBLE, CONFIG, "max_batch_size",
                         f"{cfg.max_batch_size} exceeds {step.model_name}'s max_batch_size "
                         f"{mcfg.max_batch_size}")
            step_batching = mcfg.max_batch_size > 0
            inputs = {t.name: t for t in mcfg.input}
            outs = {t.name: t for t in mcfg.output}
            for key, value in step.input_map.items():
                consumers[value] = consumers.get(value, 0) + 1
                t = inputs.get(key)
                if t is None:
                    self.add(C.ENSEMBLE, CONFIG, f"{where}.input_map.{key}",
                             f"{step.model_name} has no input {key!r}")
                    continue
                dims = _dims(t.dims)
                unify(value, (_dtype(t.data_type), dims, ([-1] if step_batching else []) + dims,
                              f"{step.model_name} input {key}"), f"{where}.input_map.{key}")
            for t in mcfg.input:
                if t.name not in step.input_map and not t.optional:
                    self.add(C.ENSEMBLE, CONFIG, f"{where}.input_map",
                             f"required input {t.name!r} of {step.model_name} is not mapped")
            in_labels = {labels.get(v, 0) for v in step.input_map.values()}
            in_labels.discard(-1)
            if len(in_labels) > 1:
                self.add(C.ENSEMBLE, CONFIG, where,
                         f"step of model {step.model_name!r} receives inputs originated from "
                         "different decoupled models")
            if model.decoupled:
                any_decoupled = True
                next_label += 1
                out_label = next_label
            else:
                out_label = max(in_labels) if in_labels else 0
            for key, value in step.output_map.items():
                if value in producers:
                    self.add(C.ENSEMBLE, CONFIG, f"{where}.output_map.{key}",
                             f"tensor {value!r} is already written by {producers[value]}")
                producers[value] = step.model_name
                labels[value] = out_label
                t = outs.get(key)
                if t is None:
                    self.add(C.ENSEMBLE, CONFIG, f"{where}.output_map.{key}",
                             f"{step.model_name} has no output {key!r}")
                    continue
                dims = _dims(t.dims)
                unify(value, (_dtype(t.data_type), dims, ([-1] if step_batching else []) + dims,
                              f"{step.model_name} output {key}"), f"{where}.output_map.{key}")

        for t in cfg.input:
            if consumers.get(t.name, 0) == 0:
                self.add(C.ENSEMBLE, CONFIG, f"input.{t.name}",
                         "not used by any step (Triton refuses to load the ensemble)")
        for name, t in outputs.items():
            if name not in producers:
                self.add(C.ENSEMBLE, CONFIG, f"output.{name}", "never produced by any step")
                continue
            dims = _dims(t.reshape.shape) if t.HasField("reshape") else _dims(t.dims)
            unify(name, (_dtype(t.data_type), dims, ([-1] if batching else []) + dims,
                         "ensemble output"), f"output.{name}")
        for name, model_name in producers.items():
            if name not in outputs and consumers.get(name, 0) == 0:
                self.add(C.ENSEMBLE, CONFIG, "ensemble_scheduling",
                         f"tensor {name!r} written by {model_name} is never used")
        for name in consumers:
            if name not in producers and name not in labels:
                self.add(C.ENSEMBLE, CONFIG, "ensemble_scheduling",
                         f"tensor {name!r} is read but neither an ensemble input nor written "
                         "by a step")

        if cfg.HasField("model_transaction_policy"):
            declared = cfg.model_transaction_policy.decoupled
            llm = self.models.get(C.LLM)
            if declared and not any_decoupled:
                self.add(C.ENSEMBLE, CONFIG, "model_transaction_policy.decoupled",
                         f"the ensemble streams but {C.LLM} is not decoupled "
                         "(render with streaming on both, or neither)")
            elif not declared and any_decoupled:
                who = C.LLM if llm is not None and llm.decoupled else "a step model"
                self.add(C.ENSEMBLE, CONFIG, "model_transaction_policy.decoupled",
                         f"the ensemble does not stream but {who} is decoupled "
                         "(Triton would make the ensemble decoupled anyway)")

    def check_bls(self) -> None:
        """The BLS and llmapi models: the models they call exist, and stream as they do."""
        calls = {C.BLS: (("preprocessing_model_name", C.PREPROCESSING),
                         ("tensorrt_llm_model_name", C.LLM),
                         ("postprocessing_model_name", C.POSTPROCESSING),
                         ("tensorrt_llm_draft_model_name", "")),
                 C.LLMAPI: (("preprocessing_model_name", C.PREPROCESSING),
                            ("tensorrt_llm_model_name", C.LLM))}
        if self.layout == C.LAYOUT_LLMAPI:
            calls = {front: (("tensorrt_llm_model_name", C.LLM),) for front in C.LLMAPI_FRONTS}
        llm = self.models.get(C.LLM)
        for caller, keys in calls.items():
            model = self.models.get(caller)
            if model is None:
                continue
            for key, default in keys:
                name = model.params.get(key, default)
                if name and name not in self.models and name not in self.unparsable \
                        and "${" not in name:
                    self.add(caller, CONFIG, f"parameters.{key}",
                             f"model {name!r} is not in the repository")
            if llm is not None:
                if model.decoupled and not llm.decoupled:
                    self.add(caller, CONFIG, "model_transaction_policy.decoupled",
                             f"{caller} streams but {C.LLM} is not decoupled")
                elif llm.decoupled and not model.decoupled:
                    self.add(caller, CONFIG, "model_transaction_policy.decoupled",
                             f"{caller} does not stream but {C.LLM} is decoupled")

    # --- engine, limits, tokenizer -----------------------------------------------------------

    def _param_path(self, m: _Model, key: str) -> Path | None:
        return self._repo_path(m, m.params.get(key, ""))

    def _repo_path(self, m: _Model, raw: str) -> Path | None:
        raw = raw.strip()
        if not raw or "${" in raw:
            return None
        p = resolve_path(Path(raw), m.path)
        if p.exists() or not p.is_absolute():
            return p
        # An absolute path as the server sees it (e.g. /models/...): try it inside this repo.
        parts = p.parts
        for i in range(1, len(parts)):
            candidate = self.repo.joinpath(*parts[i:])
            if parts[i] in self.models and candidate.exists():
                return candidate
        return p

    def check_llmapi_model_yaml(self, llm: _Model) -> None:
        """A GPU llmapi model: its model.yaml holds only LLM() arguments of the pinned
        release and a triton_config that agrees with config.pbtxt; ``model`` is a checkpoint."""
        from tritonllm.trtllm_release import load_model_yaml

        file = f"{_newest(llm.path)}/{C.LLMAPI_MODEL_YAML}"
        try:
            args, triton = load_model_yaml(llm.path / file)
        except ConfigError as e:
            self.add(C.LLM, file, "content", str(e).split(": ", 1)[-1])
            return
        if bool(triton.get("decoupled", False)) != llm.decoupled:
            self.add(C.LLM, file, "triton_config.decoupled",
                     f"{str(bool(triton.get('decoupled', False))).lower()} but "
                     f"model_transaction_policy.decoupled is {str(llm.decoupled).lower()}")
        if triton.get("max_batch_size", 0) != 0:
            self.add(C.LLM, file, "triton_config.max_batch_size",
                     f"{triton.get('max_batch_size')}: must be 0 (NVIDIA's llmapi model is "
                     "unbatched)")
        checkpoint = self._repo_path(llm, str(args.get("model", "")))
        if checkpoint is None:
            self.add(C.LLM, file, "model", "missing (the checkpoint LLM() loads)")
            return
        if not checkpoint.is_absolute() or not checkpoint.is_dir():
            if checkpoint.is_absolute():
                self.add(C.LLM, file, "model", f"checkpoint {checkpoint} does not exist")
            return  # a hub id or a relative path: the server resolves it
        if not (checkpoint / "config.json").is_file() or not any(
                checkpoint.glob("*.safetensors")):
            self.add(C.LLM, file, "model",
                     f"{checkpoint} holds no Hugging Face checkpoint (config.json, *.safetensors)")
        engine = checkpoint.parent
        if (engine / MANIFEST).is_file():
            try:
                self.manifest = read_manifest(engine)
            except RepositoryError as e:
                self.add(C.LLM, file, "model", str(e))

    def check_engine(self) -> None:
        llm = self.models.get(C.LLM)
        target = self.target
        if llm is None or target is None:
            return
        if self.layout == C.LAYOUT_LLMAPI and target == "gpu":
            self.check_llmapi_model_yaml(llm)
            return
        key = "gpt_model_path" if target == "gpu" else "engine_dir"
        engine = self._param_path(llm, key)
        if engine is None:
            return  # missing or a placeholder: reported by the parameter checks
        field = f"parameters.{key}"
        if not engine.is_dir():
            self.add(C.LLM, CONFIG, field, f"engine dir {engine} does not exist")
            return
        if target == "gpu":
            if not (engine / "config.json").is_file():
                self.add(C.LLM, CONFIG, field, f"engine dir {engine} has no config.json")
            if not any(engine.glob("rank*.engine")):
                self.add(C.LLM, CONFIG, field, f"engine dir {engine} has no rank*.engine file")
        else:
            for name in _CPU_ENGINE_FILES:
                if not (engine / name).is_file():
                    self.add(C.LLM, CONFIG, field, f"engine dir {engine} has no {name}")
        if not (engine / MANIFEST).is_file():
            self.add(C.LLM, CONFIG, field,
                     f"engine dir {engine} has no {MANIFEST}; limits cannot be checked")
            return
        try:
            manifest = read_manifest(engine)
        except RepositoryError as e:
            self.add(C.LLM, CONFIG, field, str(e))
            return
        self.manifest = manifest
        want = ENGINE_TARGETS.get(manifest.engine)
        if want != target:
            self.add(C.LLM, CONFIG, "backend",
                     f"{llm.config.backend!r} cannot run the {manifest.engine!r} engine "
                     f"in {engine}")
        tok = manifest.tokenizer_dir.rstrip("/") + "/"
        missing = [f for f in manifest.missing_files(engine) if not f.startswith(tok)]
        if missing:
            self.add(C.LLM, CONFIG, field,
                     f"engine files missing or changed since the build: {', '.join(missing[:5])}")

    def check_limits(self) -> None:
        if self.manifest is None:
            return
        lim = self.manifest.limits
        for m in self.models.values():
            if m.config.max_batch_size > lim.max_batch_size:
                self.add(m.name, CONFIG, "max_batch_size",
                         f"{m.config.max_batch_size} exceeds the engine's max_batch_size "
                         f"{lim.max_batch_size}")
        limits = {"max_input_len": lim.max_input_len, "max_seq_len": lim.max_seq_len,
                  "max_num_seqs": lim.max_batch_size, "max_num_batched_tokens": lim.max_num_tokens}
        for name in (C.PREPROCESSING, C.LLM):
            pm = self.models.get(name)
            if pm is None or not pm.is_python:
                continue
            for key, value in pm.params.items():
                if key in limits:
                    try:
                        n = int(value)
                    except ValueError:
                        continue  # reported by the parameter check
                    if n > limits[key]:
                        self.add(name, CONFIG, f"parameters.{key}",
                                 f"{n} exceeds the engine's limit {limits[key]}")

    def check_tokenizer(self) -> None:
        tok_dirs: dict[Path, list[str]] = {}
        for m in self.models.values():
            if m.is_python and "tokenizer_dir" in m.params:
                p = self._param_path(m, "tokenizer_dir")
                if p is None:
                    continue
                if not p.is_dir():
                    self.add(m.name, CONFIG, "parameters.tokenizer_dir", f"{p} does not exist")
                elif not any((p / f).is_file() for f in _TOKENIZER_FILES):
                    self.add(m.name, CONFIG, "parameters.tokenizer_dir",
                             f"{p} holds no tokenizer ({' / '.join(_TOKENIZER_FILES)})")
                else:
                    tok_dirs.setdefault(p, []).append(m.name)
        if not tok_dirs:
            return
        tok = next(iter(tok_dirs))
        eos, pads, vocab = _tokenizer_ids(tok)
        if self.manifest is not None:
            vocab = self.manifest.limits.vocab_size
        allowed_pad = pads or eos
        for name in (C.PREPROCESSING, C.LLM):
            pm = self.models.get(name)
            if pm is None or not pm.is_python:
                continue
            for key in ("end_id", "pad_id"):
                raw = pm.params.get(key, "").strip()
                if not raw.lstrip("-").isdigit():
                    continue
                value = int(raw)
                field = f"parameters.{key}"
                if vocab is not None and not 0 <= value < vocab:
                    self.add(name, CONFIG, field,
                             f"{value} is outside the vocabulary (0..{vocab - 1})")
                elif key == "end_id" and eos and value not in eos:
                    self.add(name, CONFIG, field,
                             f"{value} is not an end-of-sequence id of the tokenizer "
                             f"({sorted(eos)}, from generation_config.json / "
                             "tokenizer_config.json)")
                elif key == "pad_id" and allowed_pad and value not in allowed_pad:
                    self.add(name, CONFIG, field,
                             f"{value} disagrees with the tokenizer's pad id {sorted(allowed_pad)}")

    def check_postprocessing_sees_cancels(self) -> None:
        """On a streaming CPU repository postprocessing must run without dynamic batching and
        as one instance (see model_repository/postprocessing/1/model.py)."""
        llm, post = self.models.get(C.LLM), self.models.get(C.POSTPROCESSING)
        if self.target != "cpu" or llm is None or post is None or not llm.decoupled:
            return
        if post.config.HasField("dynamic_batching"):
            self.add(C.POSTPROCESSING, CONFIG, "dynamic_batching",
                     "its queue drops the cancelled step requests of a cancelled stream, so a "
                     "client's cancel would not stop the LLM (and Triton 2.51 leaves the "
                     "ensemble request in flight); remove it on the CPU target")
        count = sum(g.count or 1 for g in post.config.instance_group) or 1
        if count > 1:
            self.add(C.POSTPROCESSING, CONFIG, "instance_group",
                     f"{count} instances without dynamic batching's preserve_ordering reorder "
                     "a stream's responses; use 1")

    # --- embedding models --------------------------------------------------------------------

    @property
    def embedding_target(self) -> str | None:
        emb = self.embedding.get(C.EMBEDDING)
        if emb is None:
            return None
        return "gpu" if emb.config.platform == "ensemble" else "cpu"

    def check_embedding(self) -> None:
        target = self.embedding_target
        if not self.embedding:
            return
        if target is None:
            self.add(C.EMBEDDING, CONFIG, "file",
                     f"missing: {', '.join(sorted(self.embedding))} serve it")
            return
        if self.target is not None and target != self.target:
            self.add(C.EMBEDDING, CONFIG, "platform",
                     f"a {target} embedding model beside a {self.target} LLM; render both for "
                     "one target")
        expected = C.EMBEDDING_MODELS[target]
        for name in sorted(set(self.embedding) - set(expected)):
            self.add(name, CONFIG, "name", f"not an embedding model of the {target} target")
        for name in expected:
            m = self.embedding.get(name)
            if m is None:
                self.add(name, CONFIG, "file", f"missing: the {target} embedding model needs it")
                continue
            self.check_tensors(m, C.EMBEDDING_CONTRACTS[name])
            if m.config.max_batch_size < 1:
                self.add(name, CONFIG, "max_batch_size",
                         f"{m.config.max_batch_size}: must be > 0 (texts are batch rows)")
            if name == C.EMBEDDING and target == "gpu":
                self.check_embedding_steps(m)
                continue
            if not m.config.HasField("dynamic_batching"):
                self.add(name, CONFIG, "dynamic_batching",
                         "missing: without it every text runs through the encoder alone")
            if name == C.EMBEDDING_ENCODER:
                self.check_embedding_encoder(m)
            else:
                self.check_embedding_python(m, target)

    def check_embedding_python(self, m: _Model, target: str) -> None:
        from tritonllm.builders.onnx import ONNX_FILE

        if not m.is_python:
            self.add(m.name, CONFIG, "backend", f"{m.config.backend!r}: expected \"python\"")
            return
        model_py = f"{_newest(m.path)}/model.py"
        if not (m.path / model_py).is_file():
            self.add(m.name, model_py, "file", "missing (a Python-backend model needs it)")
        self.check_python_params(m)
        params = m.params
        tok = self._repo_path(m, params.get("tokenizer_dir", ""))
        if tok is not None and not (tok / "tokenizer.json").is_file():
            self.add(m.name, CONFIG, "parameters.tokenizer_dir",
                     f"{params.get('tokenizer_dir')}: holds no tokenizer.json")
        if target == "cpu":
            engine = self._repo_path(m, params.get("engine_dir", ""))
            if engine is None or not (engine / ONNX_FILE).is_file():
                self.add(m.name, CONFIG, "parameters.engine_dir",
                         f"{params.get('engine_dir')!r}: holds no {ONNX_FILE}")

    def check_embedding_encoder(self, m: _Model) -> None:
        from tritonllm.builders.onnx import ONNX_FILE

        if m.config.platform != "onnxruntime_onnx" and m.config.backend != "onnxruntime":
            self.add(m.name, CONFIG, "platform",
                     f"{m.config.platform or m.config.backend!r}: expected \"onnxruntime_onnx\"")
        name = m.config.default_model_filename or ONNX_FILE
        rel = f"{_newest(m.path)}/{name}"
        if not (m.path / rel).is_file():
            self.add(m.name, rel, "file", "missing (the ONNX encoder)")
        for acc in m.config.optimization.execution_accelerators.gpu_execution_accelerator:
            if acc.name == "tensorrt":
                mode = acc.parameters.get("precision_mode", "FP32")
                if mode not in ("FP32", "FP16", "INT8"):
                    self.add(m.name, CONFIG, "optimization.precision_mode",
                             f"{mode!r}: expected FP32, FP16 or INT8")

    def check_embedding_steps(self, m: _Model) -> None:
        if not m.config.HasField("ensemble_scheduling"):
            self.add(m.name, CONFIG, "ensemble_scheduling", "missing")
            return
        got = [(s.model_name, dict(s.input_map), dict(s.output_map))
               for s in m.config.ensemble_scheduling.step]
        want = [(name, dict(i), dict(o)) for name, i, o in C.EMBEDDING_STEPS]
        if got != want:
            self.add(m.name, CONFIG, "ensemble_scheduling",
                     f"steps {[g[0] for g in got]} do not chain as the contract says "
                     f"({' → '.join(w[0] for w in want)}, tritonllm.contract.EMBEDDING_STEPS)")
        for name, _, _ in want:
            step = self.embedding.get(name)
            if step is not None and step.config.max_batch_size < m.config.max_batch_size:
                self.add(m.name, CONFIG, "max_batch_size",
                         f"{m.config.max_batch_size} exceeds {name}'s "
                         f"{step.config.max_batch_size}")

    def run(self) -> list[Problem]:
        self.load()
        self.check_embedding()
        if self.embedding and not self.models:
            return self.problems
        self.check_models()
        self.check_postprocessing_sees_cancels()
        self.check_ensemble_graph()
        self.check_bls()
        self.check_engine()
        self.check_limits()
        self.check_tokenizer()
        return self.problems


def _tokenizer_ids(tok: Path) -> tuple[set[int], set[int], int | None]:
    """(eos ids, pad ids, vocab size) from generation_config / tokenizer_config / config."""
    def load(name: str) -> dict[str, Any]:
        try:
            data = json.loads((tok / name).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def ids(value: Any) -> set[int]:
        if isinstance(value, int):
            return {value}
        if isinstance(value, list):
            return {v for v in value if isinstance(v, int)}
        return set()

    gen, cfg = load("generation_config.json"), load("config.json")
    tcfg = load("tokenizer_config.json")
    eos = ids(gen.get("eos_token_id")) or ids(cfg.get("eos_token_id"))
    pads = ids(gen.get("pad_token_id")) or ids(cfg.get("pad_token_id"))
    vocab_map = _token_to_id(tok)
    for key, into in (("eos_token", eos), ("pad_token", pads)):
        token = tcfg.get(key)
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and token in vocab_map:
            into.add(vocab_map[token])
    vocab = cfg.get("vocab_size")
    return eos, pads, vocab if isinstance(vocab, int) else None


def _token_to_id(tok: Path) -> dict[str, int]:
    try:
        data = json.loads((tok / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[str, int] = {}
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        out.update({k: v for k, v in vocab.items() if isinstance(v, int)})
    for t in data.get("added_tokens") or []:
        if isinstance(t, dict) and isinstance(t.get("id"), int):
            out[str(t.get("content"))] = t["id"]
    return out


def validate_repository(repo: Path) -> list[Problem]:
    """Every problem in the model repository at ``repo`` (empty list: clean)."""
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"{repo}: not a directory")
    return _Validator(repo).run()


def repository_target(repo: Path) -> str:
    """The target (``"cpu"`` / ``"gpu"``) of the repository at ``repo``, from its LLM model's
    backend; ``"cpu"`` when that cannot be read (the validator reports why)."""
    v = _Validator(Path(repo))
    v.load()
    return v.target or "cpu"
