"""Checkpoint inspection: every way a checkpoint can be unbuildable gets a message naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tritonllm.builders.checkpoint import inspect_checkpoint
from tritonllm.errors import CheckpointError, UnsupportedArchitecture


@pytest.fixture
def ckpt(tiny_model: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ckpt"
    shutil.copytree(tiny_model, dest)
    return dest


def _edit_config(ckpt: Path, **changes: object) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(changes)
    (ckpt / "config.json").write_text(json.dumps(cfg))


def test_good_checkpoint(ckpt: Path) -> None:
    info = inspect_checkpoint(ckpt)
    assert info.architecture == "LlamaForCausalLM"
    assert info.weight_files == ("model.safetensors",)
    assert info.eos_token_ids == (2,) and info.bos_token_id == 1 and info.pad_token_id == 3
    assert len(info.content_hash) == 64
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(info.files)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        inspect_checkpoint(tmp_path / "nope")


def test_missing_config(ckpt: Path) -> None:
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: file is missing"):
        inspect_checkpoint(ckpt)


def test_corrupt_config(ckpt: Path) -> None:
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        inspect_checkpoint(ckpt)


def test_no_weights(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights found \(expected \*\.safetensors\)"):
        inspect_checkpoint(ckpt)


def test_pickle_only_weights_are_refused(ckpt: Path) -> None:
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only pickle weights found \(pytorch_model\.bin\)"):
        inspect_checkpoint(ckpt)


def test_truncated_safetensors(ckpt: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    corrupt = r"model\.safetensors: corrupt safetensors file \(truncated"
    with pytest.raises(CheckpointError, match=corrupt):
        inspect_checkpoint(ckpt)


def test_garbage_safetensors(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="corrupt safetensors file"):
        inspect_checkpoint(ckpt)


def test_missing_shard(ckpt: Path) -> None:
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"missing: model-00002-of-00002\.safetensors"):
        inspect_checkpoint(ckpt)


def test_unsupported_architecture_lists_supported(ckpt: Path) -> None:
    _edit_config(ckpt, architectures=["BertForMaskedLM"])
    with pytest.raises(UnsupportedArchitecture, match=r"'BertForMaskedLM' is not supported; "
                       r"supported: .*LlamaForCausalLM"):
        inspect_checkpoint(ckpt)


def test_remote_code_needs_opt_in(ckpt: Path) -> None:
    _edit_config(ckpt, auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    with pytest.raises(CheckpointError, match="--trust-remote-code"):
        inspect_checkpoint(ckpt)
    assert inspect_checkpoint(ckpt, trust_remote_code=True).architecture == "LlamaForCausalLM"


def test_missing_tokenizer(ckpt: Path) -> None:
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer found"):
        inspect_checkpoint(ckpt)


def test_missing_shape_field(ckpt: Path) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["hidden_size"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing or invalid hidden_size"):
        inspect_checkpoint(ckpt)


def test_hash_changes_with_content(ckpt: Path) -> None:
    before = inspect_checkpoint(ckpt).content_hash
    gen = json.loads((ckpt / "generation_config.json").read_text())
    gen["eos_token_id"] = [2, 3]
    (ckpt / "generation_config.json").write_text(json.dumps(gen))
    after = inspect_checkpoint(ckpt)
    assert after.content_hash != before
    assert after.eos_token_ids == (2, 3)
