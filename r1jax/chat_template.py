"""Chat formatting at the tokenizer's floor: ChatML as Qwen formats plain conversations, and a
checkpoint's own jinja chat template rendered the way transformers renders it
(`Tokenizer.apply_chat_template`; the prompt templates in r1jax/data/templates.py use both).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

Messages = Sequence[Mapping[str, str]]


def chatml(
    messages: Messages, add_generation_prompt: bool = True, default_system: str | None = None
) -> str:
    """ChatML as Qwen2/2.5 formats plain (tool-free) conversations.

    Qwen's own jinja templates insert a system turn when ``messages[0]`` is not one; pass that
    text as ``default_system`` (e.g. ``QWEN25_DEFAULT_SYSTEM``) to reproduce them exactly. The
    default (None) inserts nothing, which is what the R1 README asks for.
    """
    _check_messages(messages)
    parts = []
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        parts.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    for m in messages:
        parts.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


class _GenerationTag(jinja2.ext.Extension):
    """Accepts TRL-style ``{% generation %}...{% endgeneration %}`` and renders the body as-is."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Like transformers: jinja's own tojson escapes HTML characters, which templates do not want.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@functools.lru_cache(maxsize=16)
def _compile(chat_template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(chat_template)


def render_chat_template(
    chat_template: str,
    messages: Messages,
    add_generation_prompt: bool = True,
    **kwargs: Any,
) -> str:
    """Renders an HF chat template the way transformers does (sandboxed env, same globals)."""
    # transformers drops None-valued keys: templates test for missing keys, not None.
    msgs = [{k: v for k, v in dict(m).items() if v is not None} for m in messages]
    kwargs = {"tools": None, "documents": None, **kwargs}
    return _compile(chat_template).render(
        messages=msgs, add_generation_prompt=add_generation_prompt, **kwargs
    )


def _check_messages(messages: Messages) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise ValueError(f"messages[{i}] must be a dict with a str 'role'; got {m!r}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] ({m['role']}) must have str 'content'; got {m!r}")
