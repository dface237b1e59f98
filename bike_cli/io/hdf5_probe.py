"""The checks of an HDF5 file bike did not just write, run in a short-lived helper process
(`untrusted_hdf5` starts it, bounds its time and memory, and kills it on a stall or a stop).

A file passes when every dataset bike reads from it (its `rules`: name -> dtype kinds and ranks):

- is reached by a hard link (no soft link, no external link to another file);
- keeps its bytes in this file: contiguous, chunked or compact storage (no virtual dataset, no
  external raw storage), without filters (bike writes none; a filter would decode untrusted bytes);
- has the dtype kind and rank of its rule;
- stores at least the bytes its shape declares, and no more than the file holds: every row is
  written, so no read sized from the shape can be larger than the file;

and every attribute of the root group is one value (not an array). Reading every attribute, each
dataset's header and chunk index and every variable-length string here, in the helper, is what
makes the same reads safe in bike's own process afterwards: a corrupted file that makes libhdf5 fail
or loop does so here, where it is stopped.

Protocol (JSON lines on stdin / stdout): the helper writes `ready`, then per request
`{"path", "rules", "limit"}` any number of `.` lines (progress: one per step) and one verdict
`{"ok": true}` or `{"kind": "unreadable" | "malformed", "reason": TEXT}`. It ends on end of input,
ignores Ctrl-C (its parent decides), and dies by SIGALRM when a step outlasts twice the request's
`limit` seconds (its parent was killed and can no longer kill it).
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
from collections.abc import Callable

import h5py

STRING = "T"  # the kind of a rule for text datasets (variable- or fixed-length strings)
STRING_SLAB = 65536  # strings read per step
MEMORY_LIMIT = 4 << 30  # the helper's address space: a declared-huge attribute fails, never swaps
_LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked"}


class Refused(Exception):
    """What is wrong with the file, in words; `kind` "unreadable" (not HDF5 at all) or "malformed"."""

    def __init__(self, reason: str, kind: str = "malformed") -> None:
        super().__init__(reason)
        self.kind = kind


def _kind(dset: h5py.Dataset) -> str:
    if h5py.check_string_dtype(dset.dtype) is not None:
        return STRING
    dtype = dset.dtype
    return "V" if dtype.fields is not None or dtype.subdtype is not None else dtype.kind


def _check_storage(name: str, dset: h5py.Dataset, file_size: int) -> None:
    """Hard storage in this file, unfiltered, every declared byte stored."""
    plist = dset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise Refused(f"dataset /{name} is a virtual dataset (its data lies in other files); bike reads only "
                      "data stored in the file itself")
    if layout not in _LAYOUTS:
        raise Refused(f"dataset /{name} has HDF5 storage layout {layout}, not contiguous, chunked or compact")
    if plist.get_external_count():
        raise Refused(f"dataset /{name} keeps its data in another file (HDF5 external storage); bike reads "
                      "only data stored in the file itself")
    if plist.get_nfilters():
        names = ", ".join(plist.get_filter(i)[3].decode(errors="replace") or "?" for i in range(plist.get_nfilters()))
        raise Refused(f"dataset /{name} is stored through HDF5 filters ({names}); bike reads the unfiltered "
                      "data it writes")
    if dset.shape is None:
        raise Refused(f"dataset /{name} has no dataspace")
    declared = math.prod(dset.shape) * dset.id.get_type().get_size()
    stored = dset.id.get_storage_size()
    if stored < declared or stored > file_size:
        raise Refused(f"dataset /{name} declares shape {dset.shape} ({declared:,} bytes) but stores "
                      f"{stored:,} bytes in a file of {file_size:,}: bike reads datasets whose every row "
                      "is written")


def is_locked_error(err: BaseException) -> bool:
    """Whether h5py refused to open a file because another process holds it open for writing."""
    return isinstance(err, BlockingIOError) or "unable to lock file" in str(err)


def check_file(path: str, rules: dict[str, tuple[str, tuple[int, ...]]], step: Callable[[], None]) -> None:
    """Refused unless the file at `path` passes (see the module doc); `step` is called between reads."""
    try:
        h5 = h5py.File(path, "r")
    except Exception as err:  # noqa: BLE001 - whatever libhdf5 makes of the bytes
        raise Refused(str(err), "locked" if is_locked_error(err) else "unreadable") from None
    with h5:
        file_size = os.fstat(h5.id.get_vfd_handle()).st_size
        for name in h5.attrs:
            step()
            shape = h5.attrs.get_id(name).shape
            if shape is None:
                raise Refused(f"attribute {name} holds no value (an empty dataspace)")
            if shape != ():
                raise Refused(f"attribute {name} holds an array of shape {shape}, not one value")
            h5.attrs[name]  # the value itself (variable-length text lives in the global heap)
        for name, (kinds, ranks) in rules.items():
            step()
            link = h5.get(name, getlink=True)
            if link is None:
                continue  # a missing dataset is named by the reader, with the others missing
            if isinstance(link, h5py.SoftLink):
                raise Refused(f"/{name} is a soft link to {link.path}, not a dataset; bike reads only datasets "
                              "stored under their own name")
            if not isinstance(link, h5py.HardLink):
                raise Refused(f"/{name} is a link to another file ({type(link).__name__}); bike reads only data "
                              "stored in the file itself")
            dset = h5[name]
            if not isinstance(dset, h5py.Dataset):
                raise Refused(f"/{name} is a {type(dset).__name__.lower()}, not a dataset")
            _check_storage(name, dset, file_size)
            kind = _kind(dset)
            if kind not in kinds:
                raise Refused(f"dataset /{name} is of dtype {dset.dtype}; "
                              f"{'text' if kinds == STRING else 'numbers of kind ' + kinds} expected")
            if dset.ndim not in ranks:
                raise Refused(f"dataset /{name} has shape {dset.shape}; {' or '.join(map(str, ranks))} "
                              f"dimension(s) expected")
            if kind == STRING:
                for start in range(0, dset.shape[0], STRING_SLAB):
                    step()
                    dset[start:start + STRING_SLAB]


def serve() -> None:
    """Answer requests from stdin until it ends (the helper process's main loop)."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):  # a system that caps no address space (macOS): the time bound remains
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout
    alarm_s = 0

    def step() -> None:
        signal.alarm(alarm_s)  # SIGALRM's default action ends the process, even inside a C call
        out.write(".\n")
        out.flush()

    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        alarm_s = 2 * math.ceil(request["limit"]) + 1
        rules = {name: (kinds, tuple(ranks)) for name, (kinds, ranks) in request["rules"].items()}
        try:
            check_file(request["path"], rules, step)
            verdict: dict = {"ok": True}
        except Refused as err:
            verdict = {"kind": err.kind, "reason": str(err)}
        except Exception as err:  # noqa: BLE001 - RuntimeError, KeyError, MemoryError... from a corrupted file
            verdict = {"kind": "malformed", "reason": f"{type(err).__name__}: {err}"}
        signal.alarm(0)
        out.write(json.dumps(verdict) + "\n")
        out.flush()
