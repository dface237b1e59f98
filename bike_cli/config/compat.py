"""The `--compat` profile: bike's own defaults, or the authors' released code's behaviour.

`bike` (the default) computes the paper's formulas with bike's choices where the paper leaves room;
`authors` does what github.com/whwu95/BIKE does (test.py, train.py, datasets/, utils/; the list is in
docs/reproducing.md). Every file bike writes records the profile that made it in a `compat` field
(absent means `bike`), and stages that read such a file check that it matches their own.
"""

from __future__ import annotations

from bike_cli.errors import CacheMismatchError, InputError

BIKE = "bike"
AUTHORS = "authors"
PROFILES = (BIKE, AUTHORS)


def check_profile(name: str) -> str:
    """`name` if it is a profile, else InputError listing them."""
    if name not in PROFILES:
        raise InputError(f"--compat {name!r} is not one of {', '.join(PROFILES)}")
    return name


def recorded_profile(value: object) -> str:
    """The profile a file records (`None` or an empty value: a file from before profiles, i.e. `bike`)."""
    return str(value) if value else BIKE


def check_same_profile(own: str, recorded: str, source: object) -> None:
    """CacheMismatchError when `source` was made under another profile than the one in use."""
    if own != recorded:
        raise CacheMismatchError(
            f"{source} was made with --compat {recorded}, but this command runs with --compat {own}: "
            f"pass --compat {recorded}, or remake {source} with --compat {own}"
        )
