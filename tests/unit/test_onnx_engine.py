"""The onnx engine's checks (no export: those run in tests/integration/test_embeddings.py) and
the embedding models' rendering and validation, from a FAKE onnx engine dir."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tritonllm import contract as C
from tritonllm.builders import BuildSettings, get_builder, inspect_checkpoint
from tritonllm.builders.onnx import read_sentence_embedder
from tritonllm.builders.repository import parse_config, render_repository
from tritonllm.builders.validate import validate_repository
from tritonllm.errors import ConfigError
from tritonllm.settings import EmbeddingParams, RepoSettings


def _settings(ckpt: Path, **kw: object) -> BuildSettings:
    return BuildSettings(checkpoint=ckpt, engine="onnx", out=Path("unused"), **kw)  # type: ignore[arg-type]


def test_minilm_limits_come_from_its_sentence_transformers_files(minilm: Path) -> None:
    info = inspect_checkpoint(minilm)
    assert info.architecture == "BertModel"
    assert {"modules.json", "1_Pooling/config.json"} <= set(info.files)  # in the digest
    st = read_sentence_embedder(minilm, info.hidden_size)
    assert (st.pooling, st.normalize, st.max_seq_length, st.dimension) == ("mean", True, 256, 384)
    limits = get_builder("onnx").check(_settings(minilm), info)
    assert (limits.max_input_len, limits.max_seq_len, limits.eos_token_ids) == (256, 256, ())
    assert get_builder("onnx").check(_settings(minilm, max_input_len=128), info).max_input_len \
        == 128


@pytest.mark.parametrize(("kw", "field"), [
    ({"dtype": "bfloat16"}, "dtype"),
    ({"quantization": "int4"}, "quantization"),
    ({"quantization": "int8", "dtype": "float16"}, "dtype"),
    ({"tp": 2}, "tp/pp"),
    ({"max_input_len": 513}, "max_input_len"),
    ({"max_input_len": 64, "max_seq_len": 128}, "max_input_len / max_seq_len"),
    ({"group_size": 32}, "group_size"),
])
def test_onnx_settings_refused_name_the_field(minilm: Path, kw: dict[str, object],
                                              field: str) -> None:
    info = inspect_checkpoint(minilm)
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        get_builder("onnx").check(_settings(minilm, **kw), info)


def test_engines_refuse_the_other_kind_of_checkpoint(minilm: Path, tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="architecture: the cpu engine cannot build BertModel"):
        get_builder("cpu").check(BuildSettings(checkpoint=minilm, engine="cpu",
                                               out=Path("x")), inspect_checkpoint(minilm))
    with pytest.raises(ConfigError, match="architecture: the onnx engine cannot build "
                                          "LlamaForCausalLM; it supports: BertModel"):
        get_builder("onnx").check(_settings(tiny_model), inspect_checkpoint(tiny_model))


def _copy(minilm: Path, dest: Path) -> Path:
    shutil.copytree(minilm, dest, ignore=shutil.ignore_patterns("*.safetensors", "README*"))
    (dest / "model.safetensors").symlink_to(minilm / "model.safetensors")
    return dest


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: (d / "modules.json").unlink(), r"modules.json: missing"),
    (lambda d: (d / "1_Pooling/config.json").write_text(json.dumps(
        {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True})),
     "expected exactly one pooling mode"),
    (lambda d: (d / "1_Pooling/config.json").write_text(json.dumps(
        {"pooling_mode_weightedmean_tokens": True})), "weightedmean_tokens is not supported"),
    (lambda d: (d / "1_Pooling/config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "word_embedding_dimension": 768})),
     "word_embedding_dimension 768 is not the encoder's hidden_size 384"),
    (lambda d: (d / "sentence_bert_config.json").write_text('{"max_seq_length": "long"}'),
     "max_seq_length must be an integer"),
    (lambda d: (d / "modules.json").write_text(json.dumps(
        [*json.loads((d / "modules.json").read_text()),
         {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
         ])), r"module '3' is 'sentence_transformers.models.Dense', which the onnx engine does "
              r"not export \(supported: Transformer, Pooling, Normalize\)"),
])
def test_bad_sentence_transformers_files_are_named(minilm: Path, tmp_path: Path,
                                                   edit: Callable[[Path], object],
                                                   message: str) -> None:
    ckpt = _copy(minilm, tmp_path / "ckpt")
    edit(ckpt)
    with pytest.raises(ConfigError, match=message):
        get_builder("onnx").check(_settings(ckpt), inspect_checkpoint(ckpt))


def test_cls_pooling_without_normalize_is_read(minilm: Path, tmp_path: Path) -> None:
    ckpt = _copy(minilm, tmp_path / "ckpt")
    (ckpt / "1_Pooling/config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    modules = [m for m in json.loads((ckpt / "modules.json").read_text())
               if not m["type"].endswith("Normalize")]
    (ckpt / "modules.json").write_text(json.dumps(modules))
    st = read_sentence_embedder(ckpt, 384)
    assert (st.pooling, st.normalize) == ("cls", False)


# --- rendering and validating -------------------------------------------------------------------

def test_trt_cache_is_per_engine_and_profile_precision_from_the_build(
        fake_engine: Callable[..., Path], tmp_path: Path) -> None:
    """ONNX Runtime names a cached TensorRT engine after the graph, not its weights: two
    builds of one architecture must not share a cache folder, nor two profiles."""
    import dataclasses

    from tritonllm.builders import embedding_repository as E
    from tritonllm.builders.manifest import read_manifest

    emb = fake_engine(tmp_path / "emb", engine="onnx")
    m = read_manifest(emb)
    other = dataclasses.replace(m, cache_key="f" * 64)
    fp32 = dataclasses.replace(m, build_args={**m.build_args, "dtype": "float32"})
    plan = E.plan_embedding(m, emb, "gpu", RepoSettings())
    paths = {E.trt_cache_path(p, C.EMBEDDING_ENCODER) for p in (
        plan, E.plan_embedding(other, emb, "gpu", RepoSettings()),
        E.plan_embedding(m, emb, "gpu", RepoSettings(embedding_max_batch_size=4)))}
    assert len(paths) == 3 and all(p.startswith(E.TRT_CACHE_DIR + "/") for p in paths)
    assert E.trt_precision(plan) == "FP16"
    assert E.trt_precision(E.plan_embedding(fp32, emb, "gpu", RepoSettings())) == "FP32"


def _config(repo: Path, model: str) -> object:
    return parse_config((repo / model / "config.pbtxt").read_text(), model)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_embedding_repository_alone(fake_engine: Callable[..., Path], tmp_path: Path,
                                    target: str) -> None:
    emb = fake_engine(tmp_path / "emb", engine="onnx")
    repo = render_repository(emb, tmp_path / "repo", RepoSettings(
        target=target, embedding_max_queue_delay_microseconds=700))
    assert sorted(p.parent.name for p in repo.glob("*/config.pbtxt")) \
        == sorted(C.EMBEDDING_MODELS[target])
    assert validate_repository(repo) == []
    front = _config(repo, C.EMBEDDING)
    assert [t.name for t in front.input] == [t.name for t in C.EMBEDDING_CONTRACT.inputs]
    assert [t.name for t in front.output] == [t.name for t in C.EMBEDDING_CONTRACT.outputs]
    assert front.max_batch_size == 8  # the engine's
    batched = C.EMBEDDING if target == "cpu" else C.EMBEDDING_ENCODER
    db = _config(repo, batched).dynamic_batching
    assert (list(db.preferred_batch_size), db.max_queue_delay_microseconds) == ([4, 8], 700)
    if target == "cpu":
        params = EmbeddingParams.from_triton_parameters(
            {k: {"string_value": v.string_value} for k, v in front.parameters.items()},
            model_dir=repo / C.EMBEDDING)
        assert (params.engine_dir / "model.onnx").is_file()
        assert (params.tokenizer_dir / "tokenizer.json").is_file()
        assert (params.max_length, params.pad_to_max_length) == (255, False)
    else:
        enc = _config(repo, C.EMBEDDING_ENCODER)
        assert enc.platform == "onnxruntime_onnx"
        (trt,) = enc.optimization.execution_accelerators.gpu_execution_accelerator
        assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
        assert (repo / C.EMBEDDING_ENCODER / "1" / "model.onnx").is_file()
        assert front.platform == "ensemble"


def test_embedding_beside_the_llm(fake_engine: Callable[..., Path], tmp_path: Path) -> None:
    llm = fake_engine(tmp_path / "llm", engine="cpu")
    emb = fake_engine(tmp_path / "emb", engine="onnx")
    repo = render_repository(llm, tmp_path / "repo", embedding=emb)
    names = {p.parent.name for p in repo.glob("*/config.pbtxt")}
    assert {C.EMBEDDING, C.ENSEMBLE, C.LLM} <= names
    marker = json.loads((repo / ".tritonllm-repo.json").read_text())
    assert marker["embedding"]["models"] == [C.EMBEDDING]
    assert validate_repository(repo) == []
    with pytest.raises(ConfigError, match=r"embedding: .* is a 'cpu' engine"):
        render_repository(llm, tmp_path / "repo2", embedding=llm)
    with pytest.raises(ConfigError, match="embedding: not with --version"):
        render_repository(llm, repo, embedding=emb, version=2)


def test_validator_names_broken_embedding_models(fake_engine: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    emb = fake_engine(tmp_path / "emb", engine="onnx")
    repo = render_repository(emb, tmp_path / "repo", RepoSettings(target="gpu"))
    enc = repo / C.EMBEDDING_ENCODER / "config.pbtxt"
    enc.write_text(enc.read_text().replace("TYPE_FP32", "TYPE_FP16"))
    (repo / C.EMBEDDING_ENCODER / "1" / "model.onnx").unlink()
    shutil.rmtree(repo / C.EMBEDDING_TOKENIZER / "1" / "tokenizer")
    problems = {f"{p.model}/{p.file}: {p.field}" for p in validate_repository(repo)}
    assert problems == {
        f"{C.EMBEDDING_ENCODER}/config.pbtxt: output.embedding.data_type",
        f"{C.EMBEDDING_ENCODER}/1/model.onnx: file",
        f"{C.EMBEDDING_TOKENIZER}/config.pbtxt: parameters.tokenizer_dir",
    }
