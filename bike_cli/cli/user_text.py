"""User text is text: what bike prints to a terminal is never read as markup or as terminal controls.

Queries, class names, video paths and ids, lexicon phrases and error messages (which quote them)
come from users and files. Printed as they are, `[link=file:///etc/passwd]x[/link]` would become a
hyperlink through Rich markup, and ESC or OSC sequences (`\\x1b[2J`, `\\x1b]0;title\\x07`) would
clear the screen or retitle the window. So every console bike prints through is a `LiteralConsole`
(no markup, no `:emoji:` codes; styles come from `rich.text.Text` objects bike builds itself) whose
strings pass through `visible`, and log records pass through it in `LiteralRichHandler`.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

# C0 controls (ESC included), DEL and the C1 controls (U+0080-U+009F: CSI and OSC among them)
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def visible(text: str) -> str:
    """`text` with every control character (C0, DEL, C1; ESC, tab and line breaks included) written as
    its `\\xNN` escape, so that a terminal shows it instead of obeying it."""
    return text.translate(_CONTROLS)


class LiteralConsole(Console):
    """A Rich console on which every string is literal: markup and emoji codes off, controls made visible."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        super().__init__(*args, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Every string printed, and every string cell and title of a table, goes through here."""
        return super().render_str(visible(text), **kwargs)


class LiteralRichHandler(RichHandler):
    """Rich's log handler, with the controls of every message made visible (markup is off by default)."""

    def render_message(self, record: Any, message: str) -> Any:
        return super().render_message(record, visible(message))
