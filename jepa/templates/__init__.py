"""Chat templates as registered units (see `base` for the contract); importing this package registers them all.

A tokenizer no hand-written template claims falls to `jinja` (its own Jinja template, rendered and located
exactly, or refused with one line: see `jinja`).

To add one: a module here with a `@register_template` class (name, priority, stop tokens, usual bos/eos,
`detects`, `pieces`), imported below, and its golden strings in tests/test_tokenizer.py; the content contract is
then tested for it by tests/templates/test_contract.py without further change.
"""

from jepa.templates import chatml, jinja, llama3, olmo2  # noqa: F401  (registers them)
from jepa.templates.base import (
    TEMPLATES,
    ChatLayout,
    ChatTemplate,
    Piece,
    TemplateContext,
    detect_template,
    register_template,
    template_class,
)

__all__ = [
    "TEMPLATES",
    "ChatLayout",
    "ChatTemplate",
    "Piece",
    "TemplateContext",
    "detect_template",
    "register_template",
    "template_class",
]
