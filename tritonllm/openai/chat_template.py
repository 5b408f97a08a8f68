"""Chat templates, rendered as Hugging Face transformers renders them.

The OpenAI front turns a chat request's ``messages`` into prompt text with the model's own
Jinja chat template, then sends that text to Triton. The text must be what
``tokenizer.apply_chat_template(messages, tokenize=False, ...)`` of transformers 5 returns, and
the ids the server makes of it what ``apply_chat_template(..., tokenize=True)`` returns (see
:meth:`ChatTemplate.strip_bos`). This module reproduces transformers' rendering rules
(``transformers.utils.chat_template_utils``) without calling transformers to render:

* The template is compiled in jinja2's ``ImmutableSandboxedEnvironment`` with
  ``trim_blocks=True``, ``lstrip_blocks=True`` and the ``loopcontrols`` extension
  (``{% break %}``, ``{% continue %}``); transformers' ``{% generation %}`` block (which marks
  assistant tokens for training masks) renders its body. The sandbox refuses unsafe attributes
  (``__class__`` and the like) and refuses to call methods that mutate a list or dict.
* Undefined values are jinja2's default ``Undefined``, not the ``StrictUndefined`` of our own
  config templates: chat templates test ``{% if message.tool_calls %}`` on messages that have
  none, and transformers renders them so. Using an undefined value further (an attribute of it,
  calling it) fails.
* Globals ``raise_exception(message)`` (fails the render with that message) and
  ``strftime_now(format)`` (local time now); the ``tojson`` filter is ``json.dumps`` with
  ``ensure_ascii=False`` (no HTML escaping) and the ``indent``, ``separators`` and ``sort_keys``
  arguments.
* Render variables: ``messages``, ``add_generation_prompt``, ``tools``, ``documents``, the
  tokenizer's named special tokens (``bos_token``, ``eos_token``, ``unk_token``, ``pad_token``,
  ..., each a string: transformers' ``tokenizer.special_tokens_map``), then the caller's keyword
  arguments, which win over a special token of the same name.
* ``continue_final_message``: the rendering ends inside the last message, where its text ends,
  so the model continues it (transformers' marker-and-cut rule); not with
  ``add_generation_prompt``.

Where the template comes from (:meth:`ChatTemplate.from_tokenizer_dir`), as transformers 5.5
loads and saves it: ``chat_template.jinja`` beside the tokenizer (what ``save_pretrained``
writes), with named alternatives in ``additional_chat_templates/<name>.jinja``; else the
``chat_template`` entry of ``tokenizer_config.json`` (a string, or a list of ``{"name",
"template"}``: what transformers 4 wrote); else ``chat_template.json`` (``{"chat_template":
...}``, the processors' legacy file). Of several named templates, ``tool_use`` renders a request
with tools when there is one, ``default`` everything else. A ``--chat-template FILE`` (Jinja
text) replaces them all.

Errors: a missing or uncompilable template is a :class:`tritonllm.errors.ConfigError` (the
server cannot start); a template that fails on one conversation (``raise_exception``, a value
it cannot use) is a :class:`ChatTemplateError` carrying the template's message, which the front
answers with a 400.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tritonllm.errors import ConfigError, TritonLLMError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "CHAT_TEMPLATE_DIR",
    "CHAT_TEMPLATE_FILE",
    "LEGACY_CHAT_TEMPLATE_FILE",
    "ChatTemplate",
    "ChatTemplateError",
    "read_templates",
]

#: What transformers 5 saves a tokenizer's (default) chat template as, beside tokenizer.json.
CHAT_TEMPLATE_FILE = "chat_template.jinja"
#: Folder of a tokenizer's named templates, ``<name>.jinja`` each.
CHAT_TEMPLATE_DIR = "additional_chat_templates"
#: The processors' legacy file: ``{"chat_template": "..."}``.
LEGACY_CHAT_TEMPLATE_FILE = "chat_template.json"
_TOKENIZER_CONFIG = "tokenizer_config.json"
#: What transformers appends to the last message for ``continue_final_message``.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class ChatTemplateError(TritonLLMError):
    """A chat template failed on one conversation: it called ``raise_exception`` (an unknown
    role, roles out of order, ...), used a value it cannot use, or the request's options do not
    fit it. The message is the template's own; the front answers it with a 400."""


class _Generation(jinja2.ext.Extension):
    """transformers' ``{% generation %}...{% endgeneration %}``: renders its body (transformers
    also records where, for assistant-token masks, which a server has no use for)."""

    tags = {"generation"}  # noqa: RUF012 (jinja2's Extension declares it a plain class set)

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        block: jinja2.nodes.Node = jinja2.nodes.CallBlock(
            self.call_method("_body"), [], [], body).set_lineno(lineno)
        return block

    @staticmethod
    def _body(caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | str | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _compile(source: str, where: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}: the chat template does not compile: {exc.message} "
                          f"(line {exc.lineno})") from exc
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{where}: the chat template does not compile: {exc}") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the chat template: {exc}") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def read_templates(path: str | Path) -> tuple[dict[str, str], Path] | None:
    """The chat templates saved with the tokenizer in directory ``path``, name -> source
    (``default`` for the unnamed one), and the file they came from; None when it has none.
    The order of the module docstring; raises ConfigError for an unreadable file."""
    path = Path(path)
    templates: dict[str, str] = {}
    jinja_file = path / CHAT_TEMPLATE_FILE
    if jinja_file.is_file():
        templates["default"] = _read_text(jinja_file)
    named = path / CHAT_TEMPLATE_DIR
    if named.is_dir():
        for f in sorted(named.glob("*.jinja")):
            templates[f.name.removesuffix(".jinja")] = _read_text(f)
    if templates:
        return templates, (jinja_file if "default" in templates else named)
    config = path / _TOKENIZER_CONFIG
    entry = _read_json(config).get("chat_template") if config.is_file() else None
    if isinstance(entry, str):
        return {"default": entry}, config
    if isinstance(entry, list):
        try:
            return {str(t["name"]): str(t["template"]) for t in entry}, config
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{config}: chat_template must be a string or a list of "
                              '{"name", "template"} objects') from exc
    if entry is not None:
        raise ConfigError(f"{config}: chat_template must be a string, got {type(entry).__name__}")
    legacy = path / LEGACY_CHAT_TEMPLATE_FILE
    if legacy.is_file():
        source = _read_json(legacy).get("chat_template")
        if not isinstance(source, str):
            raise ConfigError(f"{legacy}: chat_template must be a string")
        return {"default": source}, legacy
    return None


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    # The preprocessing model's own probe (tritonllm.ensembles.tokenization): what does encoding
    # with add_special_tokens=True put before the text?
    probe = list(tokenizer("", add_special_tokens=True).input_ids)
    bos_id = tokenizer.bos_token_id
    return bool(probe) and bos_id is not None and int(probe[0]) == int(bos_id)


class ChatTemplate:
    """A compiled chat template with the tokenizer facts it renders with.

    ``templates`` maps names to Jinja sources and needs ``default`` (``tool_use``, when there,
    renders requests with tools); ``special_tokens`` are the render variables of that name
    (``bos_token``, ...); ``adds_bos``: whether the server's tokenizer puts a BOS before a text
    it encodes (see :meth:`strip_bos`). ``where`` names the source in error messages. Raises
    ConfigError for a template that does not compile. Thread-safe: rendering shares nothing
    mutable.
    """

    def __init__(self, templates: str | Mapping[str, str], *,
                 special_tokens: Mapping[str, str] | None = None, adds_bos: bool = False,
                 where: str = "chat template") -> None:
        sources = {"default": templates} if isinstance(templates, str) else dict(templates)
        if "default" not in sources:
            raise ConfigError(f"{where}: chat templates {sorted(sources)} have no default one; "
                              "pass one with --chat-template FILE")
        self.where = where
        self.sources = sources
        self.special_tokens = dict(special_tokens or {})
        self.adds_bos = adds_bos
        self._compiled = {name: _compile(src, where if name == "default" else f"{where} ({name})")
                          for name, src in sources.items() if name in ("default", "tool_use")}

    @classmethod
    def from_tokenizer_dir(cls, path: str | Path, override: Path | None = None, *,
                           tokenizer: PreTrainedTokenizerBase | None = None) -> ChatTemplate:
        """The chat template of the tokenizer saved in ``path``, or ``override`` (a
        ``--chat-template`` Jinja file) instead of the tokenizer's.

        The special tokens and whether encoding adds a BOS are the tokenizer's: ``tokenizer``,
        or the one in ``path`` (loaded here, with transformers, local files only). Raises
        ConfigError when there is no template or it does not compile, CheckpointError when
        ``path`` holds no loadable tokenizer.
        """
        root = Path(path)
        if override is not None:
            override = Path(override)
            if not override.is_file():
                raise ConfigError(f"--chat-template: {override} is not a file")
            templates: dict[str, str] = {"default": _read_text(override)}
            where = override
        else:
            found = read_templates(root)
            if found is None:
                raise ConfigError(
                    f"{root}: the tokenizer has no chat template (no {CHAT_TEMPLATE_FILE}, no "
                    f"chat_template in {_TOKENIZER_CONFIG}, no {LEGACY_CHAT_TEMPLATE_FILE}); "
                    "give one with --chat-template FILE")
            templates, where = found
        if tokenizer is None:
            from tritonllm.ensembles.tokenization import load_tokenizer

            tokenizer = load_tokenizer(root)
        special = {str(k): str(v) for k, v in tokenizer.special_tokens_map.items()}
        return cls(templates, special_tokens=special, adds_bos=_adds_bos(tokenizer),
                   where=str(where))

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               *, tools: Sequence[Mapping[str, Any]] | None = None,
               documents: Sequence[Mapping[str, Any]] | None = None,
               continue_final_message: bool = False, **kwargs: Any) -> str:
        """The prompt text of conversation ``messages`` (dicts with ``role`` and ``content``):
        exactly ``tokenizer.apply_chat_template(messages, tokenize=False, ...)`` with the same
        arguments. ``kwargs`` are further template variables.

        Raises ChatTemplateError when the template fails on this conversation, or for
        ``continue_final_message`` with ``add_generation_prompt`` or a last message the
        rendering does not keep.
        """
        if continue_final_message and add_generation_prompt:
            raise ChatTemplateError("continue_final_message and add_generation_prompt cannot "
                                    "both be set")
        if documents is not None and not all(isinstance(d, Mapping) for d in documents):
            raise ChatTemplateError("documents must be objects (with title and text)")
        template = self._compiled.get("tool_use") if tools is not None else None
        template = template or self._compiled["default"]
        chat: Any = messages
        final = ""
        if continue_final_message:
            chat, final = _tag_final_message(messages)
        variables = {**self.special_tokens, **kwargs}
        try:
            text: str = template.render(messages=chat, tools=tools, documents=documents,
                                        add_generation_prompt=add_generation_prompt,
                                        **variables)
        except ChatTemplateError:
            raise
        except (jinja2.TemplateError, TypeError, ValueError, LookupError, AttributeError,
                ArithmeticError) as exc:
            raise ChatTemplateError(f"the chat template failed: {exc}") from exc
        if continue_final_message:
            text = _cut_at_tag(text, final)
        return text

    def strip_bos(self, text: str) -> str:
        """``text`` without its leading BOS token string, when the server's tokenizer adds one.

        The front sends *text* to Triton, whose preprocessing encodes it with
        ``add_special_tokens=True`` (the tokenizer's own rule: a Llama tokenizer puts a BOS in
        front). transformers' ``apply_chat_template(tokenize=True)`` encodes the rendering with
        ``add_special_tokens=False``, because templates write the BOS themselves
        (``{{ bos_token }}``). So when the tokenizer adds a BOS (:attr:`adds_bos`: encoding the
        empty string with special tokens gives ``[bos_token_id]``, asked of the tokenizer as the
        preprocessing model asks it) and the text starts with the ``bos_token`` string, the
        string is removed once: the server's ids then equal transformers' (the BOS string is a
        special added token, split off before the model's own tokenization, so the rest encodes
        the same either way). The preprocessing model also drops a doubled leading BOS id; this
        makes the text right for every consumer of it (token counts, other engines' tokenizers).

        A template that writes no BOS while the tokenizer adds one cannot be matched from the
        text: the server's ids then start with a BOS that transformers' lack.
        """
        bos = self.bos_token
        if self.adds_bos and bos and text.startswith(bos):
            return text[len(bos):]
        return text

    def prompt(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               **kwargs: Any) -> str:
        """The text to send the server: :meth:`render`, then :meth:`strip_bos`."""
        return self.strip_bos(self.render(messages, add_generation_prompt, **kwargs))


def _tag_final_message(messages: Sequence[Mapping[str, Any]]
                       ) -> tuple[list[dict[str, Any]], str]:
    """A copy of ``messages`` whose last text ends in the continue marker, and that text."""
    if not messages:
        raise ChatTemplateError("continue_final_message needs a final message to continue")
    chat = [dict(m) for m in copy.deepcopy(list(messages))]
    content = chat[-1].get("content")
    if isinstance(content, str):
        chat[-1]["content"] = content + _CONTINUE_TAG
        return chat, content
    if isinstance(content, list):
        for block in reversed(content):
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                final: str = block["text"]
                block["text"] = final + _CONTINUE_TAG
                return chat, final
    raise ChatTemplateError("continue_final_message is set but the final message has no text "
                            "to continue")


def _cut_at_tag(text: str, final: str) -> str:
    tag = _CONTINUE_TAG.strip()
    if final.strip() not in text or tag not in text:
        raise ChatTemplateError("continue_final_message is set but the chat template does not "
                                "keep the final message's text")
    at = text.rindex(tag)
    if text[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return text[:at]  # the template kept the text's spacing
    return text[:at].rstrip()  # it trimmed the text: so does the cut
