"""Rich tables the commands share: metric cells, and columns that fold instead of cutting."""

from __future__ import annotations

from typing import Any


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
