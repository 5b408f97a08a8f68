"""Tiny random Llama checkpoints with a locally trained byte-level BPE tokenizer.

There is no model hub on CI runners or in air-gapped clusters, so tests and the demo make their
own model: a randomly initialised ``LlamaForCausalLM`` and a byte-level BPE tokenizer trained on a
small generated corpus that mixes ASCII with multi-byte UTF-8 (accents, CJK, emoji), so byte pieces
that split characters across tokens really occur. The tokenizer has a chat template
(:data:`CHAT_TEMPLATE`), so the model is a chat model too. The output is what ``save_pretrained``
writes (``config.json``, ``model.safetensors``, ``generation_config.json``, ``tokenizer.json``,
``tokenizer_config.json``, ``chat_template.jinja``) and loads with ``AutoTokenizer`` and
``AutoModelForCausalLM``. The same seed gives byte-identical weights and tokenizer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tritonllm.errors import ConfigError

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD]  # ids 0..3, in this order

#: The tiny tokenizer's chat template: ChatML's layout (``<|im_start|>role``, a newline, the
#: content), with the EOS token ending each turn instead of ChatML's ``<|im_end|>``, so that a
#: finished assistant turn is the end id the engine stops on and the vocabulary stays the
#: trained one (``<|im_start|>`` is plain text here). BOS first; a role other than system, user
#: or assistant fails the render; ``add_generation_prompt`` opens the assistant's turn.
CHAT_TEMPLATE = r"""{{ bos_token }}
{%- for message in messages %}
    {%- if message['role'] not in ('system', 'user', 'assistant') %}
        {{- raise_exception("unknown role '" ~ message['role'] ~ "': this template knows "
                            ~ "system, user and assistant") }}
    {%- endif %}
    {{- '<|im_start|>' ~ message['role'] ~ '\n' ~ (message['content'] or '') ~ eos_token ~ '\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny model; ``vocab_size`` is the BPE training target."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    vocab_size: int
    corpus_words: int


SIZES: dict[str, TinySpec] = {
    # ~0.2M parameters: seconds to make, build and serve; what the tests use.
    "tiny": TinySpec(64, 192, 2, 4, 2, 1024, 1000, 30_000),
    # ~20M parameters: big enough that batching pays off measurably; what benchmarks use.
    "small": TinySpec(512, 1408, 6, 8, 4, 2048, 4000, 120_000),
}

_WORDS = (  # noqa: SIM905 (a word list reads better as prose)
    "the a an of to in is was for on with as by at from that this it be are or not have "
    "model server request token stream batch engine triton tensor queue cache kernel "
    "inference latency throughput prompt output input sequence decode encode paged block "
    "hello world quick brown fox jumps over lazy dog river mountain city night morning "
    "café naïve façade résumé über straße smörgåsbord jalapeño déjà señor crème brûlée "
    "Привет мир данные модель 日本語 東京 学習 推論 中文 模型 한국어 서버 "
    "🙂 🚀 ✨ 🔥 — … « » € £ ¥ °C ½ π ∑ ≤ ≥"
).split()


def _corpus(seed: int, n_words: int) -> list[str]:
    rng = random.Random(seed)
    lines: list[str] = []
    while n_words > 0:
        n = rng.randint(4, 16)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.append(str(rng.randint(0, 10_000)))
        line = " ".join(words)
        lines.append(line[0].upper() + line[1:] + rng.choice([".", "!", "?", ",", ""]))
        n_words -= n
    return lines


def _train_tokenizer(spec: TinySpec, seed: int) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed, spec.corpus_words), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


def make_tiny_model(
    out: Path,
    size: str = "tiny",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a random Llama checkpoint and its tokenizer to ``out``; return ``out``.

    Raises ConfigError for an unknown ``size``.
    """
    if size not in SIZES:
        raise ConfigError(f"size: unknown size {size!r}; choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    say = progress or (lambda _msg: None)

    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    out.mkdir(parents=True, exist_ok=True)
    say("training byte-level BPE tokenizer")
    raw = _train_tokenizer(spec, seed)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    tokenizer.model_max_length = spec.max_position_embeddings
    tokenizer.chat_template = CHAT_TEMPLATE  # save_pretrained writes it to chat_template.jinja
    tokenizer.save_pretrained(out)
    _pin_tokenizer_class(out / "tokenizer_config.json")
    vocab = len(tokenizer)
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}

    say(f"initialising Llama ({spec.num_hidden_layers} layers, hidden {spec.hidden_size})")
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
        # A wide init makes logits peaky, so greedy decoding has clear winners and engines
        # that agree up to float rounding pick the same tokens.
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    say("writing safetensors")
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=[ids[EOS]], pad_token_id=ids[PAD]
    )
    model.save_pretrained(out, safe_serialization=True)
    return out


def _pin_tokenizer_class(path: Path) -> None:
    # transformers 5 writes "TokenizersBackend", which transformers 4 (still used by TensorRT-LLM
    # and most serving images) cannot load; the fast-tokenizer class name loads in both.
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
