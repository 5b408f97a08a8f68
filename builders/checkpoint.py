"""Inspect a Hugging Face checkpoint: required files, architecture, shapes, ids, content hash.

We load safetensors only: pickle-based ``*.bin`` / ``*.pt`` weights can run arbitrary code when
loaded, so a checkpoint that has nothing else is refused with a pointer to converting it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonllm.errors import CheckpointError, UnsupportedArchitecture

# Architectures (config.json "architectures") each engine can build. Keys are HF class names.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen",
    "GPT2LMHeadModel": "gpt2",
    "GPTNeoXForCausalLM": "gptneox",
    "PhiForCausalLM": "phi",
    "Phi3ForCausalLM": "phi3",
    "GemmaForCausalLM": "gemma",
}

#: Sentence encoders the onnx engine builds (the embeddings and encoder modules it wraps).
ENCODER_ARCHITECTURES: dict[str, str] = {
    "BertModel": "bert",
}
#: What sentence-transformers keeps beside the weights (pooling, normalization, max length):
#: part of the checkpoint's digest (the export reads them; embedding.json records the result).
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json",
                               "config_sentence_transformers.json", "1_Pooling/config.json")
_ALL_ARCHITECTURES = {**SUPPORTED_ARCHITECTURES, **ENCODER_ARCHITECTURES}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
#: Where a tokenizer's chat template lives besides tokenizer_config.json: transformers 5 saves it
#: as chat_template.jinja; chat_template.json is the processors' legacy file. Copied with the
#: tokenizer, and part of the checkpoint's digest.
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    """Content hash of one input file, with the stat data that lets a rebuild skip rehashing."""

    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class CheckpointInfo:
    """What the builders and the repository renderer need to know about a checkpoint."""

    path: Path
    architecture: str
    family: str
    config: Mapping[str, Any]
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    weight_files: tuple[str, ...]
    tokenizer_files: tuple[str, ...]
    files: dict[str, FileDigest] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """One sha256 over every input file's name and content hash."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + self.files[name].sha256.encode() + b"\n")
        return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_safetensors(path: Path) -> None:
    """Reject a truncated or non-safetensors file by reading its header, without loading it."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: corrupt safetensors file (shorter than its header)")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100_000_000:
                raise CheckpointError(f"{path}: corrupt safetensors file (bad header length)")
            header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file (unreadable header)") from e
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
              default=0)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path}: corrupt safetensors file "
            f"(truncated: {size} bytes, header needs {8 + n + end})"
        )


def _weight_files(root: Path) -> tuple[str, ...]:
    index = root / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: has no weight_map")
        names = tuple(sorted(set(weight_map.values())))
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise CheckpointError(f"{index}: names shard(s) that are missing: {', '.join(missing)}")
        return names
    names = tuple(sorted(p.name for p in root.glob("*.safetensors")))
    if names:
        return names
    pickles = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{root}: only pickle weights found ({', '.join(pickles)}); tritonllm loads "
            "safetensors only (pickle files can run code when loaded). Convert them once with "
            "transformers: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, "
            "safe_serialization=True)"
        )
    raise CheckpointError(f"{root}: no weights found (expected *.safetensors)")


def hash_file(path: Path, previous: FileDigest | None = None) -> FileDigest:
    """sha256 of a file; reuses ``previous`` when size and mtime are unchanged."""
    st = path.stat()
    if previous is not None and previous.size == st.st_size and previous.mtime_ns == st.st_mtime_ns:
        return previous
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return FileDigest(st.st_size, st.st_mtime_ns, h.hexdigest())


def _first_int(*values: Any) -> int | None:
    for v in values:
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            return v
        if isinstance(v, list) and v and isinstance(v[0], int):
            return int(v[0])
    return None


def _int_list(value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list):
        return tuple(int(v) for v in value if isinstance(v, int) and not isinstance(v, bool))
    return ()


def inspect_checkpoint(
    path: Path,
    previous_digests: Mapping[str, FileDigest] | None = None,
    trust_remote_code: bool = False,
) -> CheckpointInfo:
    """Validate ``path`` as a buildable checkpoint and hash its inputs.

    Raises CheckpointError (or UnsupportedArchitecture) naming the file and the problem.
    """
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"{root}: checkpoint directory does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{root}: is not a directory (pass the checkpoint folder)")
    config = _read_json(root / "config.json")

    archs = config.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else None
    if config.get("auto_map") and not trust_remote_code:
        raise CheckpointError(
            f"{root / 'config.json'}: auto_map asks for custom modeling code; "
            "pass --trust-remote-code only if you have read that code"
        )
    if arch not in _ALL_ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"{root / 'config.json'}: architecture {arch!r} is not supported; supported: "
            + ", ".join(sorted(SUPPORTED_ARCHITECTURES)) + " (LLM engines); "
            + ", ".join(sorted(ENCODER_ARCHITECTURES)) + " (the onnx engine)"
        )

    weights = _weight_files(root)
    for name in weights:
        _check_safetensors(root / name)
    tok_files = tuple(n for n in TOKENIZER_FILES if (root / n).is_file())
    if not tok_files:
        raise CheckpointError(
            f"{root}: no tokenizer found (expected one of {', '.join(TOKENIZER_FILES)})"
        )
    tok_config: dict[str, Any] = {}
    if (root / "tokenizer_config.json").is_file():
        tok_config = _read_json(root / "tokenizer_config.json")
    gen_config: dict[str, Any] = {}
    if (root / "generation_config.json").is_file():
        gen_config = _read_json(root / "generation_config.json")

    def need_int(*keys: str) -> int:
        for k in keys:
            v = config.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        raise CheckpointError(f"{root / 'config.json'}: missing or invalid {keys[0]}")

    hidden = need_int("hidden_size", "n_embd")
    heads = need_int("num_attention_heads", "n_head")
    kv_heads = _first_int(config.get("num_key_value_heads")) or heads
    eos = _int_list(gen_config.get("eos_token_id")) or _int_list(config.get("eos_token_id"))

    inputs = sorted(
        {*weights, *tok_files, "config.json"}
        | {n for n in ("tokenizer_config.json", "generation_config.json",
                       "special_tokens_map.json", "merges.txt", "vocab.txt",
                       "model.safetensors.index.json", *CHAT_TEMPLATE_FILES,
                       *SENTENCE_TRANSFORMERS_FILES)
           if (root / n).is_file()}
    )
    prev = previous_digests or {}
    digests = {n: hash_file(root / n, prev.get(n)) for n in inputs}

    return CheckpointInfo(
        path=root.resolve(),
        architecture=arch,
        family=_ALL_ARCHITECTURES[arch],
        config=config,
        vocab_size=need_int("vocab_size"),
        hidden_size=hidden,
        num_layers=need_int("num_hidden_layers", "n_layer"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        intermediate_size=_first_int(config.get("intermediate_size"), config.get("n_inner"))
        or 4 * hidden,
        max_position_embeddings=need_int("max_position_embeddings", "n_positions"),
        bos_token_id=_first_int(gen_config.get("bos_token_id"), config.get("bos_token_id")),
        eos_token_ids=eos,
        pad_token_id=_first_int(gen_config.get("pad_token_id"), config.get("pad_token_id"),
                                _special_id(root, tok_config.get("pad_token"))),
        weight_files=weights,
        tokenizer_files=tok_files,
        files=digests,
    )


def _special_id(root: Path, token: Any) -> int | None:
    """Id of a special token named in tokenizer_config.json, looked up in tokenizer.json."""
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str) or not (root / "tokenizer.json").is_file():
        return None
    try:
        data = json.loads((root / "tokenizer.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    for added in data.get("added_tokens", []):
        if added.get("content") == token:
            return int(added["id"])
    vocab = data.get("model", {}).get("vocab", {})
    return int(vocab[token]) if isinstance(vocab, dict) and token in vocab else None
