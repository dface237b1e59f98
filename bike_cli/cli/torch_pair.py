"""Do the installed torch and torchvision belong together? Decided from package metadata alone (milliseconds),
not from a failing import (`operator torchvision::nms does not exist`, after seconds of loading).

The rule: torchvision 0.(N + 15) is built for torch 2.N; either inside that known range fixes the other
(both newer: bike cannot tell). PyTorch's build labels (`+cpu`, `+cu121`, `+rocm6.2`, `+xpu`) must agree
where both carry one, and a `+cpu` torch cannot run an unlabelled torchvision that ships CUDA's runtime.
"""

from __future__ import annotations

import re
import shlex
import sys
from importlib import metadata

TORCHVISION_OFFSET = 15  # torchvision 0.(N + 15) is built for torch 2.N
KNOWN_TORCH_MINORS = range(0, 15)  # torch 2.0 ... 2.14 (bike's cap, pyproject.toml): pairs known
PYTORCH_INDEX = "https://download.pytorch.org/whl"  # + /cpu, /cu121, ...: where labelled wheels come from
TORCH_CAP = "2.14.1"  # pyproject.toml's torch<=2.14.1: what a fix may install when torch is outside the known range
_BUILD_LABEL = re.compile(r"cpu|cu\d+|rocm\d+(\.\d+)*|xpu")  # PyTorch's index labels (not a source build's +git...)


def _release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version (`2.14.1+cpu` -> (2, 14)), or None where bike cannot read it."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else None


def _paired(release: tuple[int, int], other: tuple[int, int]) -> str | None:
    """Why torch `release` (major, minor) cannot run torchvision `other`, or None where it can or
    neither is a release whose pair is known."""
    (torch_major, torch_minor), (vision_major, vision_minor) = release, other
    if torch_major == 2 and torch_minor in KNOWN_TORCH_MINORS:
        wanted = torch_minor + TORCHVISION_OFFSET
        return None if other == (0, wanted) else f"torch 2.{torch_minor} needs torchvision 0.{wanted}"
    if vision_major == 0 and vision_minor - TORCHVISION_OFFSET in KNOWN_TORCH_MINORS:
        wanted = vision_minor - TORCHVISION_OFFSET
        return None if release == (2, wanted) else f"torchvision 0.{vision_minor} is built for torch 2.{wanted}"
    return None


def _label(version: str) -> str | None:
    """The local label of a version (`2.14.1+cpu` -> 'cpu'), lower case; None without one."""
    return version.partition("+")[2].lower() or None


def _build(label: str | None) -> str | None:
    """`label` where it is one of PyTorch's build labels, else None (no label, or a source build's)."""
    return label if label and _BUILD_LABEL.fullmatch(label) else None


def mismatch(torch_version: str, vision_version: str, vision_ships_cuda: bool = False) -> str | None:
    """Why torch `torch_version` and torchvision `vision_version` do not belong together, or None where
    they do or bike cannot tell. `vision_ships_cuda`: torchvision's files include CUDA's runtime."""
    torch_release, vision_release = _release(torch_version), _release(vision_version)
    if torch_release and vision_release and (reason := _paired(torch_release, vision_release)):
        return reason
    torch_build, vision_build = _build(_label(torch_version)), _build(_label(vision_version))
    if torch_build and vision_build and torch_build != vision_build:
        return f"one is a +{torch_build} build, the other a +{vision_build} build"
    if torch_build == "cpu" and _label(vision_version) is None and vision_ships_cuda:
        return "torch is a CPU-only build, torchvision a CUDA build"
    return None


def pair_install_args(build: str | None) -> str:
    """pip's arguments that install torch and torchvision from one place: PyTorch's `build` index (e.g. 'cpu')
    where it answers (`2.14.1+cpu` sorts above PyPI's `2.14.1`), else PyPI after one 5 s try; None: PyPI alone.
    The README's CPU-only step is this with 'cpu'."""
    index = f"--extra-index-url {PYTORCH_INDEX}/{build} --timeout 5 --retries 0 " if build else ""
    return f"{index}'torch<={TORCH_CAP}' torchvision"


def fix_command(torch_version: str) -> str:
    """The one command that gives this Python a torch and a torchvision that belong together: for an
    unlabelled torch in the known range torchvision alone, else both from torch's own index."""
    build = _build(_label(torch_version))
    release = _release(torch_version)
    pip = f"{shlex.quote(sys.executable)} -m pip install --force-reinstall"
    if not build and release and release[0] == 2 and release[1] in KNOWN_TORCH_MINORS:
        return f"{pip} --no-deps 'torchvision==0.{release[1] + TORCHVISION_OFFSET}.*'"
    return f"{pip} {pair_install_args(build)}"


def installed_mismatch() -> str | None:
    """One line naming the installed torch and torchvision, why they do not belong together and the
    command that fixes it; None where they belong together, either is missing, or bike cannot tell."""
    try:
        torch, vision = metadata.distribution("torch"), metadata.distribution("torchvision")
        torch_version, vision_version = torch.version, vision.version
    except (metadata.PackageNotFoundError, OSError, ValueError):
        return None
    if not isinstance(torch_version, str) or not isinstance(vision_version, str):
        return None  # a dist-info without a Version field
    ships_cuda = False
    if _label(torch_version) == "cpu" and _label(vision_version) is None:  # the only case that needs its files
        try:
            ships_cuda = "libcudart" in (vision.read_text("RECORD") or "")
        except (OSError, ValueError):
            pass
    reason = mismatch(torch_version, vision_version, ships_cuda)
    if reason is None:
        return None
    return (f"torch {torch_version} and torchvision {vision_version} do not belong together ({reason}); "
            f"install both from one place: {fix_command(torch_version)}")
