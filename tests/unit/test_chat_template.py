"""tritonllm.openai.chat_template against transformers' ``apply_chat_template`` as the reference:
the same text for the same conversation, and the same ids once the server has tokenized it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jinja2
import pytest
from transformers import AutoTokenizer

from tritonllm.errors import ConfigError
from tritonllm.openai.chat_template import (
    CHAT_TEMPLATE_FILE,
    LEGACY_CHAT_TEMPLATE_FILE,
    ChatTemplate,
    ChatTemplateError,
)
from tritonllm.tiny import CHAT_TEMPLATE

SYSTEM = {"role": "system", "content": "You are terse."}
CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "system+user": [SYSTEM, {"role": "user", "content": "hello world"}],
    "user only": [{"role": "user", "content": "the quick brown fox"}],
    "multi-turn": [
        SYSTEM,
        {"role": "user", "content": "What is a token?"},
        {"role": "assistant", "content": "A piece of text."},
        {"role": "user", "content": "And a batch?"},
    ],
    "multi-byte": [
        {"role": "user", "content": "Café crème brûlée, straße — 日本語 東京 🙂🚀 «€½π»"},
        {"role": "assistant", "content": "Привет мир 한국어 ✨"},
        {"role": "user", "content": "  spaces  \n\tand tabs\n"},
    ],
    "assistant last": [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "Hi there"},
    ],
    "html and braces": [{"role": "user", "content": "<b>&amp;</b> {{ not a tag }} {% no %}"}],
}

# Llama 2's template (as its tokenizer_config.json had it, on one line), laid out on lines so
# that trim_blocks / lstrip_blocks matter: BOS before every user turn, [INST] markers, <<SYS>>.
LLAMA2 = """\
{% if messages[0]['role'] == 'system' %}
    {% set loop_messages = messages[1:] %}
    {% set system_message = messages[0]['content'] %}
{% else %}
    {% set loop_messages = messages %}
    {% set system_message = false %}
{% endif %}
{% for message in loop_messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if loop.index0 == 0 and system_message != false %}
        {% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}
    {% else %}
        {% set content = message['content'] %}
    {% endif %}
    {% if message['role'] == 'user' %}
{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}
{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}
{% endfor %}
"""

# transformers' extras: tojson (no HTML escaping, its keyword arguments), loop controls,
# the {% generation %} block, strftime_now, tools and documents, extra variables.
FEATURES = """\
{% for m in messages %}
    {% if loop.index > 2 %}{% break %}{% endif %}
    {% if m.role == 'system' %}{% continue %}{% endif %}
    {{ m | tojson }}|{{ m | tojson(indent=2, sort_keys=true) }}
{% endfor %}
{% generation %}[{{ messages[-1].content }}]{% endgeneration %}
tools={{ tools | tojson(separators=(',', ':')) }} documents={{ documents | tojson }}
year={{ strftime_now('%Y') }} extra={{ extra | default('none') }} bos={{ bos_token }}
{% if message is defined %}never{% endif %}{{ messages[0].missing }}
"""

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Météo <now>",
                                            "parameters": {"type": "object", "properties": {}}}}]
DOCUMENTS = [{"title": "Doc", "text": "naïve « text »"}]


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)


@pytest.fixture(scope="module")
def template(tiny_model: Path) -> ChatTemplate:
    return ChatTemplate.from_tokenizer_dir(tiny_model)


def hf_ids(hf: Any, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    out = hf.apply_chat_template(messages, tokenize=True, **kwargs)
    ids = out["input_ids"] if not isinstance(out, list) else out  # transformers 5: a BatchEncoding
    return [int(i) for i in ids]


def server_ids(hf: Any, text: str) -> list[int]:
    """What the preprocessing model makes of the prompt text (add_special_tokens=True)."""
    return [int(i) for i in hf(text).input_ids]


def tokenizer_copy(tiny_model: Path, dest: Path, *, template: bool = False) -> Path:
    """The tiny tokenizer's files in ``dest``, without its chat template unless ``template``."""
    dest.mkdir()
    for f in tiny_model.iterdir():
        if f.name != CHAT_TEMPLATE_FILE or template:
            shutil.copy2(f, dest / f.name)
    return dest


def test_the_tiny_model_saves_its_template_as_transformers_does(tiny_model: Path, hf: Any,
                                                               template: ChatTemplate) -> None:
    assert (tiny_model / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8") == CHAT_TEMPLATE
    assert hf.chat_template == CHAT_TEMPLATE == template.sources["default"]
    assert template.where == str(tiny_model / CHAT_TEMPLATE_FILE)
    assert template.special_tokens == hf.special_tokens_map
    assert template.bos_token == "<s>" and template.adds_bos


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_render_and_ids_match_transformers(name: str, add_generation_prompt: bool, hf: Any,
                                           template: ChatTemplate) -> None:
    messages = CONVERSATIONS[name]
    text = template.render(messages, add_generation_prompt=add_generation_prompt)
    assert text == hf.apply_chat_template(messages, tokenize=False,
                                          add_generation_prompt=add_generation_prompt)
    assert text.startswith("<s>")
    ids = server_ids(hf, template.strip_bos(text))
    assert ids == hf_ids(hf, messages, add_generation_prompt=add_generation_prompt)
    assert ids.count(hf.bos_token_id) == 1
    assert template.prompt(messages, add_generation_prompt) == template.strip_bos(text)


def test_the_tiny_template_opens_the_assistant_turn(template: ChatTemplate) -> None:
    text = template.render(CONVERSATIONS["system+user"])
    assert text == ("<s><|im_start|>system\nYou are terse.</s>\n"
                    "<|im_start|>user\nhello world</s>\n<|im_start|>assistant\n")
    # a message without content (the front drops None) renders an empty turn
    assert template.render([{"role": "assistant"}], False) == "<s><|im_start|>assistant\n</s>\n"


@pytest.mark.parametrize("name", ["assistant last", "multi-byte"])
def test_continue_final_message_matches_transformers(name: str, hf: Any,
                                                     template: ChatTemplate) -> None:
    messages = CONVERSATIONS[name]
    text = template.render(messages, False, continue_final_message=True)
    assert text == hf.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    assert text.endswith(messages[-1]["content"])
    assert server_ids(hf, template.strip_bos(text)) == hf_ids(
        hf, messages, continue_final_message=True)
    with pytest.raises(ChatTemplateError, match="add_generation_prompt"):
        template.render(messages, True, continue_final_message=True)


def test_an_unknown_role_is_the_templates_error(hf: Any, template: ChatTemplate) -> None:
    messages = [{"role": "tool", "content": "42"}]
    with pytest.raises(jinja2.TemplateError) as theirs:
        hf.apply_chat_template(messages, tokenize=False)
    with pytest.raises(ChatTemplateError) as ours:
        template.render(messages)
    assert str(ours.value) == str(theirs.value) == (
        "unknown role 'tool': this template knows system, user and assistant")


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("name", ["system+user", "multi-turn", "multi-byte", "assistant last"])
def test_a_llama2_template_from_a_string_matches_transformers(
        name: str, add_generation_prompt: bool, hf: Any, template: ChatTemplate) -> None:
    llama = ChatTemplate(LLAMA2, special_tokens=template.special_tokens,
                         adds_bos=template.adds_bos)
    messages = CONVERSATIONS[name]
    text = llama.render(messages, add_generation_prompt)
    assert text == hf.apply_chat_template(messages, tokenize=False, chat_template=LLAMA2,
                                          add_generation_prompt=add_generation_prompt)
    assert "[INST]" in text and text.startswith("<s>[INST]")
    # BOS before every user turn: strip_bos removes only the first, as the server adds it back
    assert server_ids(hf, llama.strip_bos(text)) == hf_ids(
        hf, messages, chat_template=LLAMA2, add_generation_prompt=add_generation_prompt)


def test_llama2_role_order_error(template: ChatTemplate) -> None:
    llama = ChatTemplate(LLAMA2, special_tokens=template.special_tokens)
    with pytest.raises(ChatTemplateError, match=r"^Conversation roles must alternate user/"):
        llama.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_transformers_extras_match(hf: Any, template: ChatTemplate) -> None:
    features = ChatTemplate(FEATURES, special_tokens=template.special_tokens)
    messages = CONVERSATIONS["multi-turn"] + [{"role": "user", "content": "<é & 日本>"}]
    for kwargs in ({}, {"tools": TOOLS, "documents": DOCUMENTS, "extra": "x"},
                   {"bos_token": "OVERRIDDEN"}):
        text = features.render(messages, **kwargs)
        assert text == hf.apply_chat_template(messages, tokenize=False, chat_template=FEATURES,
                                              add_generation_prompt=True, **kwargs)
    assert '"<é & 日本>"' not in text  # the third message is past the {% break %}
    assert "[<é & 日本>]" in text and "bos=OVERRIDDEN" in text and "never" not in text


def test_tool_use_template_renders_requests_with_tools(tiny_model: Path) -> None:
    both = {"default": "default:{{ messages | length }}",
            "tool_use": "tools:{{ tools[0].function.name }}"}
    ours = ChatTemplate(both)
    hf = AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)
    hf.chat_template = both
    messages = CONVERSATIONS["user only"]
    for tools in (None, TOOLS):
        assert ours.render(messages, tools=tools) == hf.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert ours.render(messages, tools=TOOLS) == "tools:get_weather"
    with pytest.raises(ConfigError, match="no default one"):
        ChatTemplate({"tool_use": "x"})


def test_the_override_file_wins(tiny_model: Path, tmp_path: Path, hf: Any) -> None:
    override = tmp_path / "mine.jinja"
    override.write_text(LLAMA2, encoding="utf-8")
    ours = ChatTemplate.from_tokenizer_dir(tiny_model, override=override)
    assert ours.where == str(override)
    messages = CONVERSATIONS["system+user"]
    assert ours.render(messages) == hf.apply_chat_template(
        messages, tokenize=False, chat_template=LLAMA2, add_generation_prompt=True)
    # the override also serves a tokenizer that has no template of its own
    bare = tokenizer_copy(tiny_model, tmp_path / "bare")
    assert ChatTemplate.from_tokenizer_dir(bare, override=override).render(messages) == \
        ours.render(messages)
    with pytest.raises(ConfigError, match=r"--chat-template: .*nope\.jinja is not a file"):
        ChatTemplate.from_tokenizer_dir(tiny_model, override=tmp_path / "nope.jinja")


def test_a_missing_template_names_the_option(tiny_model: Path, tmp_path: Path) -> None:
    bare = tokenizer_copy(tiny_model, tmp_path / "bare")
    with pytest.raises(ConfigError, match=r"bare: the tokenizer has no chat template .*"
                                          r"--chat-template FILE"):
        ChatTemplate.from_tokenizer_dir(bare)


def test_a_template_in_tokenizer_config_is_read_as_transformers_reads_it(
        tiny_model: Path, tmp_path: Path) -> None:
    # transformers 4 saved the template in tokenizer_config.json; chat_template.jinja wins
    # over it when both are there, in transformers 5 and here.
    d = tokenizer_copy(tiny_model, tmp_path / "t4")
    config = json.loads((d / "tokenizer_config.json").read_text())
    config["chat_template"] = LLAMA2
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    messages = CONVERSATIONS["multi-turn"]
    for expected in (LLAMA2, CHAT_TEMPLATE):
        hf = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        assert hf.chat_template == expected
        assert ChatTemplate.from_tokenizer_dir(d).render(messages) == hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
        shutil.copy2(tiny_model / CHAT_TEMPLATE_FILE, d / CHAT_TEMPLATE_FILE)


def test_the_processors_legacy_file_is_read(tiny_model: Path, tmp_path: Path) -> None:
    d = tokenizer_copy(tiny_model, tmp_path / "legacy")
    legacy = {"chat_template": "legacy {{ bos_token }}"}
    (d / LEGACY_CHAT_TEMPLATE_FILE).write_text(json.dumps(legacy))
    ours = ChatTemplate.from_tokenizer_dir(d)
    assert ours.where == str(d / LEGACY_CHAT_TEMPLATE_FILE)
    assert ours.render([]) == "legacy <s>"


def test_a_template_that_does_not_compile_is_a_config_error(tiny_model: Path,
                                                            tmp_path: Path) -> None:
    bad = tmp_path / "bad.jinja"
    bad.write_text("hello\n{% for m in messages %}{{ m.content }}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jinja: the chat template does not compile: "
                                          r"Unexpected end of template.*\(line 2\)"):
        ChatTemplate.from_tokenizer_dir(tiny_model, override=bad)
    with pytest.raises(ConfigError, match="does not compile"):
        ChatTemplate("{% if %}")


def test_raise_exception_is_a_chat_template_error() -> None:
    with pytest.raises(ChatTemplateError, match=r"^no$"):
        ChatTemplate("{{ raise_exception('no') }}").render([])


@pytest.mark.parametrize("source", [
    "{{ messages[0].content.missing.deeper }}",      # an attribute of an undefined value
    "{{ messages[0].content + 1 }}",                 # a TypeError inside the template
    "{{ messages.append(1) }}",                      # the sandbox is immutable
    "{{ ''.__class__.__mro__ }}",                    # unsafe attributes
    "{{ cycler.__init__.__globals__ }}",
])
def test_render_failures_are_chat_template_errors(source: str) -> None:
    with pytest.raises(ChatTemplateError, match=r"^the chat template failed: "):
        ChatTemplate(source).render([{"role": "user", "content": "x"}])


def test_the_sandbox_hides_dunder_attributes(hf: Any) -> None:
    # transformers renders an unsafe attribute as undefined (empty), never the object; a use of
    # it fails (above).
    source = "[{{ ''.__class__ }}][{{ messages.__class__ }}]"
    assert ChatTemplate(source).render([]) == "[][]" == hf.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, chat_template=source)


def test_strip_bos_only_when_the_tokenizer_adds_one(tiny_model: Path, hf: Any) -> None:
    special = {"bos_token": "<s>"}
    adds = ChatTemplate("x", special_tokens=special, adds_bos=True)
    assert adds.strip_bos("<s><s>hi") == "<s>hi" and adds.strip_bos("hi <s>") == "hi <s>"
    assert ChatTemplate("x", special_tokens=special).strip_bos("<s>hi") == "<s>hi"
    assert ChatTemplate("x", adds_bos=True).strip_bos("<s>hi") == "<s>hi"  # no bos_token

    # A tokenizer that adds no BOS (its post-processor removed): asked, not guessed.
    from tokenizers import processors

    no_bos = AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)
    no_bos.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    assert no_bos("hello").input_ids == hf("hello", add_special_tokens=False).input_ids
    ours = ChatTemplate.from_tokenizer_dir(tiny_model, tokenizer=no_bos)
    assert not ours.adds_bos
    messages = CONVERSATIONS["system+user"]
    text = ours.render(messages)
    assert ours.strip_bos(text) == text
    assert server_ids(no_bos, ours.strip_bos(text)) == hf_ids(no_bos, messages,
                                                              add_generation_prompt=True)


def test_the_template_travels_with_the_tokenizer(tiny_model: Path, tmp_path: Path,
                                                 fake_engine: Any,
                                                 template: ChatTemplate) -> None:
    # checkpoint -> engine dir: copied with the tokenizer, and part of the checkpoint's digest
    # (a new template is a new build); engine dir -> repository: the tokenizer folder.
    from tritonllm.builders.build import TOKENIZER_EXTRA
    from tritonllm.builders.checkpoint import inspect_checkpoint
    from tritonllm.builders.repository import TOKENIZER_SUBDIR, render_repository

    assert CHAT_TEMPLATE_FILE in TOKENIZER_EXTRA
    assert CHAT_TEMPLATE_FILE in inspect_checkpoint(tiny_model).files
    repo = render_repository(fake_engine(tmp_path / "engine", "cpu"), tmp_path / "repo")
    served = ChatTemplate.from_tokenizer_dir(repo / TOKENIZER_SUBDIR)
    assert served.sources == template.sources
    messages = CONVERSATIONS["multi-turn"]
    assert served.prompt(messages) == template.prompt(messages)
