"""Recipes: YAML files that fill a settings dataclass, defaults < recipe < overrides (the options typed, by
field name); the rules are in docs/formats.md, "Recipes (YAML)"."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import math
import os
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bike_cli.config.files import check_regular_file, file_kind, not_regular
from bike_cli.config.ranges import check_ranges, option_for
from bike_cli.errors import InputError, location

log = logging.getLogger(__name__)

T = TypeVar("T")
EXTENDS = "extends"
STAGE = "stage"
OVERRIDE_ORIGIN = "command line"
ORIGINS = "origins"  # the field (where a dataclass has one) build_config fills: name -> OVERRIDE_ORIGIN or path:line
FOLLOWS = {"model": ("pretrained", "quick_gelu"), "pretrained": ("quick_gelu",)}  # settings that follow a typed key


@dataclasses.dataclass(frozen=True)
class _Setting:
    value: Any
    origin: str  # `path:line` of a recipe, or OVERRIDE_ORIGIN


def build_config(cls: type[T], recipe: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                 *, stage: str | None = None, options: Collection[str] = ()) -> T:
    """An instance of dataclass `cls`: its defaults, then the recipe's values, then `overrides` (a `None`
    override sets None), ranges checked. With `stage`, a recipe for another stage is refused; `options`: the
    fields the command has an option for (a recipe value out of range names the one that overrides it)."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    names = [name for name in fields if name != ORIGINS]
    settings = _read_recipe(Path(recipe)) if recipe is not None else {}
    recipe_stage = settings.pop(STAGE, None)
    if recipe_stage is not None and stage is not None and recipe_stage.value != stage:
        raise InputError(f"{recipe_stage.origin}: this recipe is for stage {recipe_stage.value!r}, not {stage!r}")
    _follow_overrides(settings, overrides or {})
    settings.update({key: _Setting(value, OVERRIDE_ORIGIN) for key, value in (overrides or {}).items()})
    values = {}
    for key, setting in settings.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"known settings: {', '.join(names)}"
            raise InputError(f"{setting.origin}: unknown setting {key!r}; {hint}")
        values[key] = _coerce(setting.value, hints[key], f"{setting.origin}: {key}")
    if ORIGINS in fields:
        values[ORIGINS] = {key: setting.origin for key, setting in settings.items()}
    log.debug("%s from recipe %s with overrides %s", cls.__name__, recipe, sorted(overrides or {}))
    config = cls(**values)
    check_ranges(config, {key: s.origin for key, s in settings.items() if s.origin != OVERRIDE_ORIGIN}, options)
    return config


def setting_origin(config: Any, key: str) -> str | None:
    """Where `config.key` came from: OVERRIDE_ORIGIN, a recipe's `path:line`, or None (the dataclass default,
    or a config not made by `build_config`)."""
    return (getattr(config, ORIGINS, None) or {}).get(key)


def setting_text(config: Any, key: str) -> str:
    """`config.key` as a message names it: the option as typed (`--model ViT-B-16`, `--no-quick-gelu`), or
    the recipe key and where it is set (`model: ViT-B-32 (recipes/k400_vitb32_8f.yaml:3)`), or the default
    (`model: null (bike's default)`). A value of no known origin that is not the default (a config built
    in code) is named as its option."""
    value, origin = getattr(config, key), setting_origin(config, key)
    if origin is None and not _is_default(config, key):
        origin = OVERRIDE_ORIGIN
    if origin == OVERRIDE_ORIGIN:
        return option_for(key, value) if isinstance(value, bool) else f"{option_for(key)} {_shown(value)}"
    where = origin or "bike's default"
    return f"{key}: {_shown(value)} ({where})"


def _is_default(config: Any, key: str) -> bool:
    """Whether `config.key` holds its field's default."""
    field = next(f for f in dataclasses.fields(config) if f.name == key)
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return getattr(config, key) == default


def setting_source(config: Any, key: str, default: str) -> str:
    """Where `config.key` came from and the option that changes it, to stand beside its value in a message:
    "--quick-gelu on the command line", "recipes/base_video.yaml:9, key quick_gelu; --no-quick-gelu changes
    it", or, for a setting left unset, `default` (what the stage did instead) and the option that sets it."""
    value, origin = getattr(config, key), setting_origin(config, key)
    hint = typing.get_type_hints(type(config)).get(key)
    flag = hint is bool or bool in typing.get_args(hint)  # `bool` or `bool | None`: set on and off by two options
    if origin == OVERRIDE_ORIGIN:
        return f"{setting_text(config, key)} on the command line"
    if origin is None and not _is_default(config, key):  # a config built in code
        return setting_text(config, key)
    if origin is not None:
        change = option_for(key, not value) if flag and isinstance(value, bool) else option_for(key)
        return f"{origin}, key {key}; {change} changes it"
    options = f"{option_for(key, True)}/{option_for(key, False)}" if flag else option_for(key)
    return f"{default}; {options} sets it"


def config_to_dict(config: Any) -> dict[str, Any]:
    """Every init field of a dataclass instance, in field order, as plain YAML types (Paths as str)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"{config!r} is not a dataclass instance")
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init and f.name != ORIGINS}


def resolved_yaml(config: Any, *, stage: str | None = None) -> str:
    """Every setting of `config` as a YAML recipe that `build_config` reads back equal (`io.train_state.save_resolved`);
    with `stage`, it starts with `stage: STAGE`, so other stages refuse it."""
    data = ({STAGE: stage} if stage is not None else {}) | config_to_dict(config)
    text = f"# every setting of a {type(config).__name__}; usable as a recipe\n"
    return text + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _follow_overrides(settings: dict[str, _Setting], overrides: Mapping[str, Any]) -> None:
    """Drop the recipe's settings that describe a model or weights the overrides replace (`FOLLOWS`)."""
    for key, followers in FOLLOWS.items():
        recipe, typed = settings.get(key), overrides.get(key)
        if recipe is None or typed is None or _same(key, recipe.value, typed):
            continue
        if key == "pretrained" and Path(str(typed)).is_file():
            continue  # a weights file may hold the recipe's weights: keep what the recipe says of them
        dropped = [name for name in followers if name in settings and name not in overrides]
        if not dropped:
            continue
        shown = ", ".join(f"{name}: {_shown(settings[name].value)} ({settings[name].origin})" for name in dropped)
        log.info("%s %s is not the recipe's %s (%s, %s): leaving out the recipe's %s, which describe%s %s; "
                 "set %s to choose", option_for(key), typed, key, recipe.value, recipe.origin, shown,
                 "" if len(dropped) > 1 else "s", "that model" if key == "model" else "those weights",
                 " or ".join("--quick-gelu/--no-quick-gelu" if name == "quick_gelu" else option_for(name)
                             for name in dropped))
        for name in dropped:
            del settings[name]


def _same(key: str, a: Any, b: Any) -> bool:
    """Whether two values of `model` or `pretrained` name the same thing (`ViT-B/32` is `ViT-B-32`; tags
    are case- and dash-blind, as open_clip reads them)."""
    a, b = str(a), str(b)
    if key == "model":
        return a.replace("/", "-") == b.replace("/", "-")
    return a.lower().replace("-", "_") == b.lower().replace("-", "_")


def _shown(value: Any) -> str:
    """A value as a recipe writes it: `true`, `null`, `ViT-B-32`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(_plain(value))


def _read_recipe(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, _Setting]:
    """The settings of `path` over those of the recipes it extends (`extends` removed)."""
    settings = _read_mapping(path)
    parent = settings.pop(EXTENDS, None)
    if parent is None or parent.value is None:
        return settings
    if not isinstance(parent.value, str) or not parent.value.strip():
        raise InputError(f"{parent.origin}: {EXTENDS}: {parent.value!r} is not a recipe file name")
    base = path.parent / parent.value
    chain = chain + (path.resolve(),)
    if base.resolve() in chain:
        cycle = " -> ".join(str(p) for p in chain + (base.resolve(),))
        raise InputError(f"{parent.origin}: {EXTENDS}: {parent.value!r} makes a cycle: {cycle}")
    if file_kind(base) is None:
        raise InputError(f"{parent.origin}: {EXTENDS}: recipe {base} not found")
    if (problem := not_regular(base, "recipe")) is not None:
        raise InputError(f"{parent.origin}: {EXTENDS}: {problem}")
    return _read_recipe(base, chain) | settings


def _read_mapping(path: Path) -> dict[str, _Setting]:
    """The top-level keys of one YAML file, each with its value and `path:line`."""
    check_regular_file(path, "recipe")  # a FIFO would block the read, /dev/zero never end it
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read recipe {path}: {e}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines = _key_lines(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise InputError(f"{location(path, mark.line + 1 if mark else None)}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe is a mapping of setting names to values, not a {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise InputError(f"{path}: setting name {key!r} is not a string")
    return {key: _Setting(value, location(path, lines.get(key))) for key, value in data.items()}


def _key_lines(node: yaml.Node | None, path: Path) -> dict[str, int]:
    """Line of each top-level scalar key of a composed document; a key set twice is an error."""
    lines: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in lines:
            raise InputError(f"{location(path, line)}: {key_node.value!r} is set twice "
                             f"(first on line {lines[key_node.value]})")
        lines[key_node.value] = line
    return lines


def _coerce(value: Any, hint: Any, what: str) -> Any:
    """`value` as type `hint` (see the module docstring); `what` ("path:line: key") starts errors."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"unsupported settings type {hint} ({what})")
        return None if value is None else _coerce(value, inner[0], what)
    if value is None:
        raise InputError(f"{what}: null is not allowed here; expected {_DESCRIPTIONS.get(origin or hint, hint)}")
    if origin is list:
        if isinstance(value, str):  # one template written without brackets
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{what}: {value!r} is not a list")
        return [_coerce(item, args[0], f"{what}[{i}]") for i, item in enumerate(value)]
    if hint is dict:
        if not isinstance(value, Mapping):
            raise InputError(f"{what}: {value!r} is not a mapping")
        return dict(value)
    convert = _CONVERTERS.get(hint)
    if convert is None:
        raise TypeError(f"unsupported settings type {hint} ({what})")
    return convert(value, what)


def _to_int(value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)  # int() and float() ignore surrounding whitespace
    raise InputError(f"{what}: {value!r} is not an integer")


def _to_float(value: Any, what: str) -> float:
    number = None
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None:
        raise InputError(f"{what}: {value!r} is not a number")
    if not math.isfinite(number):
        raise InputError(f"{what}: {value!r} is not a finite number")
    return number


def _to_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise InputError(f"{what}: {value!r} is not true or false")


def _to_str(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    raise InputError(f"{what}: {value!r} is not a string (quote it in YAML)")


def _to_path(value: Any, what: str) -> Path:
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip()):
        return Path(value)
    raise InputError(f"{what}: {value!r} is not a path")


_CONVERTERS: dict[Any, Callable[[Any, str], Any]] = {
    int: _to_int, float: _to_float, bool: _to_bool, str: _to_str, Path: _to_path,
}
_DESCRIPTIONS: dict[Any, str] = {
    int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path", list: "a list",
}


def _plain(value: Any) -> Any:
    """Paths as str, tuples as lists: what `yaml.safe_dump` writes and `build_config` reads back."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
