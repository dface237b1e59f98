"""What a file is, told from its first bytes (nothing is run), in the words of an error message for a file
of the wrong kind: `describe_file` (a noun phrase) and `wrong_kind` (the error)."""

from __future__ import annotations

import codecs
import csv
from pathlib import Path

from bike_cli.config.files import FOLDER as FOLDER_WORDS
from bike_cli.config.files import REGULAR, file_kind
from bike_cli.errors import BikeError, InputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a torch.save file (and a TorchScript archive) is a zip
PICKLE_PROTOCOLS = range(2, 6)  # a pickle of protocol 2+ starts with 0x80 and the protocol number
HEAD_BYTES = 4096
_SHOW = 40  # characters of a text file's first line shown

HDF5, ZIP, PICKLE, SAFETENSORS, VIDEO, TEXT, OTHER_TEXT, BINARY, EMPTY, FOLDER, MISSING, SPECIAL = (
    "hdf5", "zip", "pickle", "safetensors", "video", "text", "other-text", "binary", "empty", "folder", "missing",
    "special")  # SPECIAL: a FIFO, a device or a socket (never opened: a FIFO would block, /dev/zero never ends)
TORCH_KINDS = (ZIP, PICKLE)  # what torch.load reads (a zip since torch 1.6; a bare pickle before)

_WORDS = {
    HDF5: "an HDF5 file (such as a feature cache)",
    ZIP: "a zip archive (such as a torch checkpoint)",
    PICKLE: "a Python pickle",
    SAFETENSORS: "a safetensors file",
    VIDEO: "a video file",
    OTHER_TEXT: "text that is not UTF-8",
    BINARY: "binary data (not text, HDF5, zip or pickle)",
    EMPTY: "an empty file",
    FOLDER: "a folder",
    MISSING: "missing",
}


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(HEAD_BYTES)


def _text_kind(head: bytes) -> str:
    if b"\x00" in head:
        return BINARY
    try:  # the head may end inside a character: only a whole file's end is final
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < HEAD_BYTES)
    except UnicodeDecodeError:
        printable = sum(b >= 32 or b in b"\t\n\r" for b in head)
        return OTHER_TEXT if printable >= 0.95 * len(head) else BINARY
    return TEXT


def sniff(path: str | Path) -> str:
    """The kind of `path`: one of HDF5, ZIP, PICKLE, SAFETENSORS, VIDEO, TEXT, OTHER_TEXT, BINARY,
    EMPTY, FOLDER, MISSING, SPECIAL (an unreadable path reads as MISSING when it is not there, else BINARY)."""
    path = Path(path)
    kind = file_kind(path)  # from os.stat: nothing that is not a regular file is opened
    if kind is None:
        return MISSING
    if kind != REGULAR:
        return FOLDER if kind == FOLDER_WORDS else SPECIAL
    try:
        head = _head(path)
    except FileNotFoundError:
        return MISSING
    except (OSError, ValueError):
        return BINARY if path.exists() else MISSING
    if not head:
        return EMPTY
    if head.startswith(HDF5_SIGNATURE):
        return HDF5
    if head.startswith(ZIP_SIGNATURES):
        return ZIP
    if head[0] == 0x80 and len(head) > 1 and head[1] in PICKLE_PROTOCOLS:
        return PICKLE
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000:
        return SAFETENSORS  # an 8-byte little-endian header length, then the JSON header
    if head[4:8] == b"ftyp" or head.startswith((b"\x1aE\xdf\xa3", b"RIFF", b"OggS")):
        return VIDEO
    return _text_kind(head)


CSV_WORDS = {  # bike's own CSVs, as messages name them
    "attributes": "an attributes CSV (what gen-attributes writes)",
    "hits": "a hits CSV (what search --out writes)",
    "failures": "a failures CSV (the videos extract-features could not read)",
    "score": "a score CSV (what eval and fuse write)",
}


def csv_kind(header: list[str]) -> str | None:
    """Which of bike's CSVs a header row (its cells) is, as CSV_WORDS names it, or None (their columns:
    docs/formats.md)."""
    cells = [cell.strip() for cell in header]
    if "attr_1" in cells and "sentence" in cells:
        return CSV_WORDS["attributes"]
    if cells[:3] == ["query", "rank", "video_id"]:
        return CSV_WORDS["hits"]
    if cells == ["video_id", "path", "reason"]:
        return CSV_WORDS["failures"]
    if len(cells) >= 3 and cells[0] == "video_id" and cells[1] in ("label", "labels"):
        return CSV_WORDS["score"]
    return None


def describe_file(path: str | Path) -> str:
    """What `path` is, as a noun phrase for "PATH is ...": "a folder", "an HDF5 file (...)", "a score CSV
    (...)", "a text file starting 'x.mp4 3'", ..."""
    kind = sniff(path)
    if kind == SPECIAL:
        return file_kind(path) or _WORDS[MISSING]
    if kind != TEXT:
        return _WORDS[kind]
    line = _head(Path(path)).decode("utf-8", errors="replace").lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    known = csv_kind(next(csv.reader([line]), []))
    if known is not None:
        return known
    shown = line if len(line) <= _SHOW else line[:_SHOW] + "..."
    return f"a text file starting {shown!r}" if shown.strip() else "a text file"


def wrong_kind(path: str | Path, expected: str, hint: str = "",
               error: type[BikeError] = InputError) -> BikeError:
    """The error for `path` given where `expected` belongs: "PATH is WHAT, not EXPECTED[; HINT]"."""
    if sniff(path) == MISSING:
        return error(f"{path} does not exist; expected {expected}")
    return error(f"{path} is {describe_file(path)}, not {expected}{'; ' + hint if hint else ''}")


def not_text(path: str | Path, what: str, err: UnicodeDecodeError) -> BikeError:
    """The error for `path`, read as a `what` ("score CSV": UTF-8 text), failing to decode with `err`."""
    if sniff(path) == TEXT:  # text where it starts, a bad byte further on
        return InputError(f"{path}: {what} is not UTF-8 text ({err.reason} at byte {err.start})")
    return wrong_kind(path, f"{'an' if what[0] in 'aeiou' else 'a'} {what} (UTF-8 text)")
