"""The range of every numeric setting, declared beside its field (`batch_size: int = ranged(16, min=1)`),
and the one check of them, `check_ranges` (run by `build_config` before any stage is imported).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from typing import Any

from bike_cli.errors import InputError

RANGE = "range"  # the metadata key of a field's Range
MAX_FRAMES = 256  # frames per clip (the paper uses 8, 16 or 32)
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are non-negative; numpy's legacy ones below 2**32


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number: `min` and `max` inclusive, `above` exclusive; `at_least` names another field
    of the same config whose value is an inclusive lower bound (None skips that bound)."""

    min: float | None = None
    max: float | None = None
    above: float | None = None
    at_least: str | None = None

    def problem(self, value: float, config: Any) -> str | None:
        """What is wrong with `value` (after the option or key), or None when it is in range."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, not {value}"
        low_ok = (self.min is None or value >= self.min) and (self.above is None or value > self.above)
        high_ok = self.max is None or value <= self.max
        if not (low_ok and high_ok):
            return f"must be {self.describe(isinstance(value, float))}, not {_number(value)}"
        other = getattr(config, self.at_least) if self.at_least else None
        if other is not None and value < other:
            return f"({_number(value)}) must be at least {option_for(self.at_least)} ({_number(other)})"
        return None

    def describe(self, real: bool = False) -> str:
        """The range in words: `at least 1`, `more than 0`, `between 1 and 256`; a `real` number's
        interval as `in [0, 1]` or `in (0, 1]`."""
        if real and self.max is not None and (self.min is not None or self.above is not None):
            low = f"[{_number(self.min)}" if self.min is not None else f"({_number(self.above)}"
            return f"in {low}, {_number(self.max)}]"
        if self.min is not None and self.max is not None:
            return f"between {_number(self.min)} and {_number(self.max)}"
        low = (f"at least {_number(self.min)}" if self.min is not None
               else f"more than {_number(self.above)}" if self.above is not None else None)
        high = f"at most {_number(self.max)}" if self.max is not None else None
        return " and ".join(part for part in (low, high) if part)


def ranged(default: Any, *, min: float | None = None, max: float | None = None,  # noqa: A002
           above: float | None = None, at_least: str | None = None) -> Any:
    """A dataclass field with `default` and its `Range`."""
    return dataclasses.field(default=default, metadata={RANGE: Range(min, max, above, at_least)})


def field_ranges(cls: type) -> dict[str, Range]:
    """The declared range of each ranged field of settings dataclass `cls`, by field name."""
    return {f.name: f.metadata[RANGE] for f in dataclasses.fields(cls) if RANGE in f.metadata}


def option_for(key: str, value: Any = None) -> str:
    """The option that sets field `key`: `--batch-size`; for a flag, the one that sets `value`
    (`--quick-gelu` for True, `--no-quick-gelu` for False)."""
    return f"--{'no-' if value is False else ''}{key.replace('_', '-')}"


def check_ranges(config: Any, origins: Mapping[str, str] | None = None,
                 options: Collection[str] = ()) -> None:
    """InputError naming the first setting of `config` out of its declared range (None is "not given").

    `origins[name]`: the `path:line` of the recipe that set the value (others are the options'); such a
    value names the option that overrides it where the command has one (its field name is in `options`)."""
    origins = origins or {}
    for name, bounds in field_ranges(type(config)).items():
        value = getattr(config, name)
        if value is None or (problem := bounds.problem(value, config)) is None:
            continue
        if name in origins:
            hint = f" (the option {option_for(name)} overrides it)" if name in options else ""
            raise InputError(f"{origins[name]}: {name} {problem}{hint}")
        raise InputError(f"{option_for(name)} {problem}")


def _number(value: float) -> str:
    """`1`, `0.5`, `1e-09`: an int as it is, a float in its shortest form."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_choice(option: str, value: Any, choices: Collection[str]) -> None:
    """InputError when `value`, given as `option`, is not one of `choices`."""
    if value not in choices:
        raise InputError(f"{option} {value!r} is not one of {', '.join(choices)}")
