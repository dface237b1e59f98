"""Rich tables the commands share: metric cells, columns that fold instead of cutting, and `Folded`
text that breaks a path between its folders at any width (80 columns included)."""

from __future__ import annotations

import re
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text

from bike_cli.cli.user_text import visible


def metric_cells(result: dict) -> dict[str, str]:
    """Printable metrics of a protocol result: `X_mean` and `X_std` become one `X` cell 'mean ± std'."""
    from bike_cli.eval.protocols import headline_metrics

    values = headline_metrics(result)
    cells = {}
    for key, value in values.items():
        if key.endswith("_std") and key[:-4] + "_mean" in values:
            continue
        if key.endswith("_mean") and key[:-5] + "_std" in values:
            cells[key[:-5]] = f"{value:.2f} ± {values[key[:-5] + '_std']:.2f}"
        else:
            cells[key] = f"{value:.2f}"
    return cells


def add_columns(table: Any, names: list[str], justify: str = "right") -> None:
    """Columns whose long headers and values wrap onto more lines rather than end in '…' at 80 columns."""
    for name in names:
        table.add_column(name.replace("_", " "), justify=justify, overflow="fold")


class Folded:
    """Text for a table cell or title that wraps at spaces and after path separators, so that a path
    breaks between its folders, never inside a name (only a name wider than the whole column folds).

    Rich's own folding cuts a long path wherever the column ends (`train_video_ru` / `n/best.pt`).
    The text is user text: its controls are shown, not obeyed (`cli.user_text.visible`)."""

    def __init__(self, text: object, style: str = "") -> None:
        self.text, self.style = visible(str(text)), style

    def _pieces(self) -> list[str]:
        """The text cut after each `/` (or `\\`) and each run of spaces: where a line may end."""
        return [piece for piece in re.split(r"(?<=[/\\])(?![/\\])|(?<=\s)(?=\S)", self.text) if piece]

    def lines(self, width: int) -> list[str]:
        """The text packed into lines of at most `width` cells, cut only between pieces."""
        lines, line = [], ""
        for piece in self._pieces():
            if line and cell_len((line + piece).rstrip()) > width:
                lines.append(line.rstrip())
                line = piece
            else:
                line += piece
        return [*lines, line.rstrip()]

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        pieces = [cell_len(piece.rstrip()) for piece in self._pieces()] or [0]
        return Measurement(max(pieces), cell_len(self.text)).with_maximum(options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("\n".join(self.lines(options.max_width)), style=self.style, overflow="fold",
                   justify=options.justify or "left")


def title(text: object) -> Folded:
    """A table title that may hold a path: styled as Rich's titles, folded as `Folded`."""
    return Folded(text, style="table.title")
