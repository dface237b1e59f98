"""Phrase lexicons for the Attributes branch (the candidate "attributes" a video is matched against): a
built-in name (`LEXICONS`, the phrase files of the repository's `lexicons/`; `imagenet1k` built at run
time from open_clip) or a phrase file (docs/formats.md, "Lexicons"); the one name form (`normalise_name`);
`read_lines`, the checked reader of the text files (lists, class names, phrases) bike reads.
A built-in name wins over a file of that name in the working folder: write `./k400` for the file.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import bike_cli
from bike_cli.config.files import check_regular_file
from bike_cli.errors import InputError, location
from bike_cli.io.file_kind import not_text

log = logging.getLogger(__name__)

_PACKAGE = Path(bike_cli.__file__).resolve().parent
# An installed wheel carries the phrase files as package data (bike_cli/lexicons/); a checkout or an
# editable install reads the repository's lexicons/ folder, their source.
LEXICON_DIR = next((d for d in (_PACKAGE / "lexicons", _PACKAGE.parent / "lexicons") if d.is_dir()),
                   _PACKAGE.parent / "lexicons")

LEXICONS: dict[str, str] = {
    "k400": "Kinetics-400: the 400 class names",
    "k600_split1": "Kinetics-600 zero-shot split 1: 160 of the classes new in K600 (also a class list)",
    "k600_split2": "Kinetics-600 zero-shot split 2: 160 of the classes new in K600 (also a class list)",
    "k600_split3": "Kinetics-600 zero-shot split 3: 160 of the classes new in K600 (also a class list)",
    "k600": "Kinetics-600: the 600 class names (also a class list)",
    "k700": "Kinetics-700: the 700 class names (also a class list)",
    "ssv2": "Something-Something v2: the 174 class templates, '[something]' written 'something' (also a class list)",
    "ucf101": "UCF-101: the 101 class names, CamelCase split into lower-case words",
    "hmdb51": "HMDB-51: the 51 class names",
    "anet": "ActivityNet 1.3: the 200 class names",
    "charades": "Charades: the 157 action names (without the c000 ids)",
    "imagenet1k": "ImageNet-1K: open_clip's 1,000 class names, 998 after merging 2 repeated names (built at run time)",
}
_GENERATED = ("imagenet1k",)  # built-in lexicons that have no file
# The paper's and datasets' own spellings; compared in lower case without '-', '_' and spaces.
ALIASES: dict[str, str] = {
    "in1k": "imagenet1k", "imagenet": "imagenet1k", "ilsvrc2012": "imagenet1k",
    "kinetics400": "k400", "kinetics600": "k600", "kinetics700": "k700",
    "somethingsomethingv2": "ssv2", "sthsthv2": "ssv2", "somethingsomething": "ssv2", "kinetics": "k400", "ucf": "ucf101", "hmdb": "hmdb51",
    "activitynet": "anet", "activitynet13": "anet",
    **{f"kinetics600split{i}": f"k600_split{i}" for i in (1, 2, 3)},
}


def normalise_name(text: str) -> str:
    """The form class names and phrases are matched in: lower case, `_` as a space, whitespace stripped
    and collapsed ("Playing_Guitar " -> "playing guitar"). Video-list labels, class-name lookups and
    lexicon phrases all compare this form."""
    return " ".join(text.replace("_", " ").lower().split())


def lexicon_sha256(phrases: Sequence[str]) -> str:
    """Hex sha256 of the phrases in order (UTF-8, one per line): identifies a lexicon's content."""
    return hashlib.sha256("\n".join(phrases).encode("utf-8")).hexdigest()


def _lexicon_key(name: str) -> str:
    """A lexicon's name as looked up: lower case without '-', '_' and spaces ("IN-1K" -> "in1k"); looser
    than `normalise_name`, for the names of lexicons, not of classes."""
    return "".join(c for c in name.lower() if c not in "-_ ")


def _bare(text: str) -> bool:
    """No folder and no extension: a name that may be a built-in lexicon's."""
    return "/" not in text and "\\" not in text and not Path(text).suffix


def builtin_name(text: str) -> str | None:
    """The built-in lexicon a bare `text` names (itself, any case, or an alias such as IN-1K), else None."""
    if not _bare(text):
        return None
    keys = {_lexicon_key(name): name for name in LEXICONS} | ALIASES
    return keys.get(_lexicon_key(text))


def builtin_file(name_or_path: str | Path) -> Path | None:
    """The phrase file of the built-in lexicon a bare name (no folder, no extension) names, else None:
    how `--classes k700` reads a built-in class list (a built-in name wins over a file of that name in
    the working folder; write `./k700` for the file)."""
    name = builtin_name(str(name_or_path))
    return LEXICON_DIR / f"{name}.txt" if name is not None and name not in _GENERATED else None


def load_lexicon(name_or_path: str | Path) -> list[str]:
    """The phrases of a built-in lexicon (a name in `LEXICONS` or `ALIASES`) or of a phrase file, in file order."""
    text = str(name_or_path)
    name = builtin_name(text)
    if name in _GENERATED:
        return _imagenet_phrases()
    if name is not None:
        path = LEXICON_DIR / f"{name}.txt"
        if not path.is_file():
            raise InputError(f"built-in lexicon {name!r} not found at {path}: the bike installation is incomplete "
                             "(reinstall it: pip install bike-cli, or pip install -e . in a checkout)")
        return read_phrase_file(path)
    path = Path(name_or_path)
    if path.is_file():
        return read_phrase_file(path)
    if path.exists():
        raise InputError(f"lexicon {path} is not a file")
    if not _bare(text):
        raise InputError(f"lexicon file not found: {path}")
    known = [_lexicon_key(n) for n in LEXICONS] + list(ALIASES)
    close = difflib.get_close_matches(_lexicon_key(text), known, n=3, cutoff=0.6)
    names = list(dict.fromkeys(builtin_name(c) for c in close))
    hint = f"did you mean {' or '.join(map(repr, names))}? " if names else ""
    raise InputError(f"unknown lexicon {text!r} (and no such file); {hint}built-in lexicons: {', '.join(LEXICONS)}")


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file; InputError when it is missing, not a regular file or unreadable."""
    check_regular_file(path, what)
    try:
        with open(path, encoding="utf-8-sig") as f:  # universal newlines: CR/LF read as \n
            return f.read().split("\n")
    except UnicodeDecodeError as e:
        raise not_text(path, what, e) from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror}") from None


def read_phrase_file(path: str | Path) -> list[str]:
    """Phrases of a file with one phrase per line (`#` comment lines and blank lines skipped)."""
    source = Path(path)
    lines = read_lines(source, "lexicon")
    phrases, seen = [], {}  # seen: normalised phrase -> its line
    for number, line in enumerate(lines, 1):
        phrase = line.strip()
        if not phrase or phrase.startswith("#"):
            continue
        first = seen.setdefault(normalise_name(phrase), number)
        if first != number:
            raise InputError(f"{location(source, number)}: phrase {phrase!r} repeats the phrase of line {first} "
                             f"({lines[first - 1].strip()!r}; compared in lower case, '_' as space)")
        phrases.append(phrase)
    if not phrases:
        raise InputError(f"{source}: the lexicon has no phrases (blank lines and # comments are skipped)")
    return phrases


def _imagenet_phrases() -> list[str]:
    """open_clip's ImageNet-1K class names, each normalised phrase once (first occurrence kept)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    first: dict[str, str] = {}
    for name in IMAGENET_CLASSNAMES:
        first.setdefault(normalise_name(name), name)
    return list(first.values())
