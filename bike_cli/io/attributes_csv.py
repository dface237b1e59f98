"""The attributes CSV of `bike gen-attributes` (schema 1, columns: docs/formats.md); `read_attributes_csv`
accepts the columns in any order but needs exactly this set."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bike_cli.errors import InputError, location
from bike_cli.io.atomic import atomic_write
from bike_cli.io.file_kind import CSV_WORDS, MISSING, TEXT, not_text, sniff, wrong_kind
from bike_cli.io.score_csv import (
    ID_COLUMN,
    LABEL_COLUMN,
    LABELS_COLUMN,
    SCORE_FORMAT,
    format_label_cell,
    label_column,
    parse_label_cell,
)

VIEW_COLUMN = "view"
SENTENCE_COLUMN = "sentence"
_ATTR = re.compile(r"attr_[1-9]\d*")


@dataclass
class AttributesTable:
    """The rows of an attributes CSV (one per video, or per video and view)."""

    video_ids: list[str]  # [R]
    views: list[int] | None  # [R] view index of each row in per-view files, else None
    labels: list[tuple[int, ...]]  # [R] class indices, () where unknown
    multilabel: bool
    attributes: list[list[str]]  # [R][k] phrases, most similar first
    scores: np.ndarray  # float32 [R, k] cosine similarities, descending along each row
    sentences: list[str]  # [R]
    top_k: int
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.video_ids)


def columns_for(top_k: int, per_view: bool, multilabel: bool) -> list[str]:
    """The header of an attributes CSV."""
    return [ID_COLUMN, *([VIEW_COLUMN] if per_view else []), label_column(multilabel),
            *(f"attr_{i}" for i in range(1, top_k + 1)), *(f"score_{i}" for i in range(1, top_k + 1)),
            SENTENCE_COLUMN]


def write_attributes_csv(path: str | Path, table: AttributesTable) -> Path:
    """Write `table` atomically to `path` (`.tmp` beside it, then renamed)."""
    path = Path(path)
    rows = len(table.video_ids)
    lengths = {len(table.labels), len(table.attributes), len(table.sentences), table.scores.shape[0]}
    if lengths != {rows} or (table.views is not None and len(table.views) != rows):
        raise InputError(f"attributes table for {path}: columns of different lengths {sorted(lengths)}")
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns_for(table.top_k, table.views is not None, table.multilabel))
        views = table.views if table.views is not None else [None] * rows
        for vid, view, labels, attrs, scores, sentence in zip(
            table.video_ids, views, table.labels, table.attributes, table.scores.tolist(), table.sentences
        ):
            lead = [vid] if view is None else [vid, view]
            writer.writerow([*lead, format_label_cell(labels), *attrs, *(SCORE_FORMAT % s for s in scores),
                             sentence])
    return path


def check_attributes_csv(path: str | Path) -> Path:
    """`path` if its kind and header are an attributes CSV's (checked before its sidecar is trusted), else
    InputError saying what it is (`file_kind.describe_file`); a partial header is `read_attributes_csv`'s."""
    source = Path(path)
    kind = sniff(source)
    if kind == MISSING:
        raise InputError(f"attributes CSV not found: {source}")
    if kind == TEXT:
        try:
            with open(source, newline="", encoding="utf-8-sig") as fh:
                header = next(csv.reader(fh), [])
        except UnicodeDecodeError as e:
            raise not_text(source, "attributes CSV", e) from None
        except csv.Error:
            header = []
        if any(_ATTR.fullmatch(cell.strip()) or cell.strip() == SENTENCE_COLUMN for cell in header):
            return source
    raise wrong_kind(source, CSV_WORDS["attributes"])


def read_attributes_csv(path: str | Path) -> AttributesTable:
    """Read an attributes CSV; InputError naming the file and line of the first problem."""
    source = check_attributes_csv(path)
    try:
        with open(source, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{source}: the attributes CSV is empty (no header)")
            layout = _Layout.from_header(header, source)
            return _read_rows(reader, layout, source)
    except UnicodeDecodeError as e:
        raise not_text(source, "attributes CSV", e) from None
    except csv.Error as e:
        raise InputError(f"{source}: malformed CSV ({e})") from None


@dataclass(frozen=True)
class _Layout:
    """Column positions of an attributes CSV."""

    video_id: int
    view: int | None
    label: int
    multilabel: bool
    attrs: list[int]
    scores: list[int]
    sentence: int

    @classmethod
    def from_header(cls, header: list[str], source: Path) -> _Layout:
        where = location(source, 1)
        index = {name.strip(): i for i, name in enumerate(header)}
        if len(index) != len(header):
            raise InputError(f"{where}: a column name repeats in the header {','.join(header)!r}")
        multilabel = LABELS_COLUMN in index
        top_k = sum(1 for name in index if _ATTR.fullmatch(name))
        expected = columns_for(top_k, VIEW_COLUMN in index, multilabel)
        if top_k == 0 or set(index) != set(expected):
            shown = ",".join(expected) if top_k else "video_id,[view,]label,attr_1..attr_k,score_1..score_k,sentence"
            raise InputError(f"{where}: not an attributes CSV header: expected {shown!r}, got {','.join(header)!r}")
        return cls(
            video_id=index[ID_COLUMN], view=index.get(VIEW_COLUMN),
            label=index[LABELS_COLUMN if multilabel else LABEL_COLUMN], multilabel=multilabel,
            attrs=[index[f"attr_{i}"] for i in range(1, top_k + 1)],
            scores=[index[f"score_{i}"] for i in range(1, top_k + 1)], sentence=index[SENTENCE_COLUMN],
        )


def _read_rows(reader: Iterator[list[str]], layout: _Layout, source: Path) -> AttributesTable:
    ids, views, labels, attributes, scores, sentences = [], [], [], [], [], []
    seen: dict[tuple[str, int | None], int] = {}
    width = 1 + max(layout.attrs + layout.scores + [layout.video_id, layout.label, layout.sentence,
                                                     layout.view or 0])
    for cells in reader:
        if not cells or cells == [""]:
            continue
        where = location(source, reader.line_num)
        if len(cells) != width:
            raise InputError(f"{where}: {len(cells)} fields, the header has {width}")
        vid = cells[layout.video_id]
        view = _view(cells[layout.view], where) if layout.view is not None else None
        first = seen.setdefault((vid, view), reader.line_num)
        if not vid or first != reader.line_num:
            what = f"video {vid!r}" + (f" view {view}" if view is not None else "")
            raise InputError(f"{where}: {what} is empty or repeats line {first}")
        attrs = [cells[i] for i in layout.attrs]
        if not all(attrs) or not cells[layout.sentence]:
            raise InputError(f"{where}: empty attribute or sentence for video {vid!r}")
        ids.append(vid)
        views.append(view)
        labels.append(parse_label_cell(cells[layout.label], layout.multilabel, where))
        attributes.append(attrs)
        scores.append([_score(cells[i], where) for i in layout.scores])
        sentences.append(cells[layout.sentence])
    top_k = len(layout.attrs)
    return AttributesTable(
        video_ids=ids, views=views if layout.view is not None else None, labels=labels,
        multilabel=layout.multilabel, attributes=attributes,
        scores=np.array(scores, dtype=np.float32).reshape(len(ids), top_k), sentences=sentences,
        top_k=top_k, source=source,
    )


def _view(cell: str, where: str) -> int:
    if not cell.strip().isdigit():
        raise InputError(f"{where}: view {cell!r} is not a view index (0, 1, ...)")
    return int(cell)


def _score(cell: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"{where}: score {cell!r} is not a finite number")
    return value
