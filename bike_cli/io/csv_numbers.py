"""Fast CSV rows of many floats: `%.7g`-rounded values formatted by pyarrow's multi-threaded writer.

Python's `%`-formatting costs about 0.3 us a number, 2.7 s for a 20,000 x 400 score table. Here the
values are first rounded to 7 significant digits in numpy (each becomes the double nearest the
decimal `%.7g` prints), then pyarrow writes the shortest text that reads back as that double, which
is that decimal. Readers get exactly the numbers the `%.7g` writer gave them; only the notation of
very small or large numbers differs (`0.00001234567` or `1.5e+22` where `%.7g` wrote `1.234567e-05`,
`1.5e+22`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

DIGITS = 7
_TIE = 1e-8  # |frac - 0.5| below this: the scaled value may sit on a rounding tie; decided by Python
_LOW, _HIGH = 10.0**DIGITS / 10, 10.0**DIGITS  # a value with DIGITS digits scales into [_LOW, _HIGH)


def _python_round(values: np.ndarray) -> np.ndarray:
    """The `%.7g` decimals of `values` as doubles, by Python's own formatting (the exact reference)."""
    return np.array([float(f"{v:.{DIGITS}g}") for v in values.tolist()], dtype=np.float64)


def round_significant(values: np.ndarray) -> np.ndarray:
    """float64 copy of `values` with each element the double nearest its `%.7g` decimal.

    Vectorised where the decimal scaling is exact (one multiplication or division by a power of ten
    up to 1e22); values outside (below about 1e-16 or above 1e28 in magnitude) and rare near-ties in
    Python. Few passes over the data, in place: it is memory-bound."""
    x = np.array(values, dtype=np.float64).ravel()  # a copy: the result is written into it
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.log10(np.abs(x))
        np.floor(shift, out=shift)
        np.subtract(DIGITS - 1, shift, out=shift)  # scale by 10**shift so DIGITS digits stay before the point
    shift[~np.isfinite(shift)] = 0  # zeros
    shift = shift.astype(np.int64)
    y = _scale(x, shift)
    for _ in range(2):  # log10 can be off by one next to powers of ten: fix those few
        off = np.flatnonzero((np.abs(y) >= _HIGH) | ((np.abs(y) < _LOW) & (x != 0)))
        if not off.size:
            break
        shift[off] += np.where(np.abs(y[off]) >= _HIGH, -1, 1)
        y[off] = _scale(x[off], shift[off])
    frac = np.abs(y)
    frac -= np.floor(frac)
    frac -= 0.5
    slow = (np.abs(frac) < _TIE) | (np.abs(shift) > 22)
    np.rint(y, out=y)
    _unscale(y, shift)
    slow_at = np.flatnonzero(slow)
    y[slow_at] = _python_round(x[slow_at])
    return y.reshape(np.shape(values))


_POW10 = 10.0 ** np.arange(23)  # exact powers of ten in float64


def _scale(v: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """v * 10**shift, one correctly rounded operation by an exact power of ten (|shift| clipped to 22)."""
    powers = _POW10[np.minimum(np.abs(shift), 22)]
    with np.errstate(over="ignore"):  # huge values scaled down are multiplied first, then divided below
        out = v * powers
    down = np.flatnonzero(shift < 0)
    out[down] = v[down] / powers[down]
    return out


def _unscale(m: np.ndarray, shift: np.ndarray) -> None:
    """m / 10**shift in place (the inverse of `_scale`, again one correctly rounded operation)."""
    powers = _POW10[np.minimum(np.abs(shift), 22)]
    down = np.flatnonzero(shift < 0)
    up = m[down] * powers[down]
    m /= powers
    m[down] = up


def write_number_rows(fh: BinaryIO, prefixes: Sequence[str], matrix: np.ndarray) -> None:
    """Write one line per row: `prefixes[i]` (already CSV text, ending with a comma) and the row's
    numbers, `%.7g`-rounded and comma-separated. matrix: float [N, K]."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    columns = np.asfortranarray(round_significant(matrix))  # [N, K], each column contiguous
    table = pa.Table.from_arrays([pa.array(columns[:, k]) for k in range(columns.shape[1])],
                                 names=[str(k) for k in range(columns.shape[1])])
    body = io.BytesIO()
    pa_csv.write_csv(table, body, pa_csv.WriteOptions(include_header=False))
    lines = body.getvalue().split(b"\n")  # N lines and the empty tail
    if lines and lines[-1] == b"":
        lines.pop()
    for prefix, line in zip(prefixes, lines):
        fh.write(prefix.encode("utf-8") + line + b"\n")
