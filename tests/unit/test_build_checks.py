"""Invalid build requests fail before anything slow runs, with a message naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonllm.builders import ENGINES, BuildSettings, build
from tritonllm.cli.build import ENGINE_NAMES
from tritonllm.errors import ConfigError


def _build(tiny_model: Path, tmp_path: Path, **kw: object) -> None:
    build(BuildSettings(checkpoint=tiny_model, engine=kw.pop("engine", "cpu"),  # type: ignore[arg-type]
                        out=kw.pop("out", tmp_path / "e"), **kw))  # type: ignore[arg-type]


def test_cli_engine_choices_match_registry() -> None:
    assert set(ENGINE_NAMES) == set(ENGINES)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_input_len": 1024, "max_seq_len": 1024},
         "max_input_len: 1024 must be smaller than max_seq_len"),
        ({"max_seq_len": 4096}, "max_seq_len: 4096 exceeds the model's max_position_embeddings"),
        ({"quantization": "fp8"},
         "quantization: the cpu engine cannot do 'fp8'; it supports: int8, int4"),
        ({"dtype": "bfloat16"}, "dtype: 'bfloat16' is not supported by the cpu engine"),
        ({"quantization": "int8", "dtype": "float16"},
         "dtype: --quantization int8 sets the weight format"),
        ({"quantization": "int4", "group_size": 48}, "group_size: 48 must divide the hidden size"),
        ({"group_size": 64}, "group_size: only applies to --quantization int4"),
        ({"tp": 2}, "tp/pp: the cpu engine runs on one device"),
        ({"engine": "nope"}, "engine: unknown engine 'nope'"),
        ({"max_batch_size": 0}, "max_batch_size: must be at least 1"),
    ],
)
def test_invalid_combinations(tiny_model: Path, tmp_path: Path, options: dict[str, object],
                              message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", "'")):
        _build(tiny_model, tmp_path, **options)
    assert not (tmp_path / "e").exists()


def test_tp_must_divide_heads(tiny_model: Path, tmp_path: Path) -> None:
    # The tiny model has 4 query / 2 key-value heads; tp=4 cannot split the KV heads.
    trt = ENGINES["trtllm-legacy"]()
    from tritonllm.builders.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(tiny_model)
    heads = r"tp: 4 does not divide the attention heads \(4 query, 2 key/value\)"
    with pytest.raises(ConfigError, match=heads):
        trt.check(BuildSettings(checkpoint=tiny_model, engine="trtllm-legacy", out=tmp_path,
                                tp=4), info)


def test_output_dir_that_is_a_file(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"out: .*f is a file, not a directory"):
        _build(tiny_model, tmp_path, out=tmp_path / "f" / "engine")


def test_output_dir_not_writable(tiny_model: Path, tmp_path: Path) -> None:
    # /proc refuses new directories even for root, where permission bits would not.
    with pytest.raises(ConfigError, match="out: cannot write to /proc/tritonllm-test"):
        _build(tiny_model, tmp_path, out=Path("/proc/tritonllm-test/engine"))


def test_refuses_to_overwrite_foreign_directory(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"is not empty and holds no manifest\.json"):
        _build(tiny_model, tmp_path)
    assert (tmp_path / "e" / "precious.txt").read_text() == "keep me"
