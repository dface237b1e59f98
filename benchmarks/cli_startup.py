"""Start-up of the `bike` command: wall time and peak memory of `bike --help` and friends, beside
`python -c pass` (the interpreter alone) and beside importing every stage (what `bike --help`
loaded before the commands imported their stages lazily). Target: `bike --help` under 0.5 s and
120 MiB.

Each command runs `--repeats` times in a fresh process, the rows interleaved; the table gives the
median wall time and the median peak resident set size (ru_maxrss of that one child, from wait4).

    .venv/bin/python benchmarks/cli_startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
BIKE = shutil.which("bike", path=str(Path(PY).parent)) or ""
ROWS = {
    "python -c pass": [PY, "-c", "pass"],
    "bike --help": [BIKE, "--help"] if BIKE else [PY, "-m", "bike_cli", "--help"],
    "bike --version": [BIKE, "--version"] if BIKE else [PY, "-m", "bike_cli", "--version"],
    "bike train-video --help": [BIKE, "train-video", "--help"] if BIKE else [PY, "-m", "bike_cli", "train-video", "--help"],
    "bike fuse --no-such-option (usage error)": ([BIKE] if BIKE else [PY, "-m", "bike_cli"]) + ["fuse", "--x"],
    "bike eval --batch-size 0 (out of range)": ([BIKE] if BIKE else [PY, "-m", "bike_cli"])
    + ["eval", "--out", "bench-eval", "--features", "none.h5", "--batch-size", "0"],
    "import every stage (the old start-up)": [PY, "-c", "import bike_cli.stages.demo, bike_cli.cli.app"],
}


def run_once(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one fresh process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "100"})
    _, _, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = 0  # reaped by wait4
    return seconds, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for cmd in ROWS.values():
        run_once(cmd)  # warm the page cache: every row reads its files from memory
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    memory: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(args.repeats):
        for name, cmd in ROWS.items():
            seconds, mib = run_once(cmd)
            times[name].append(seconds)
            memory[name].append(mib)
    base_t, base_m = statistics.median(times["python -c pass"]), statistics.median(memory["python -c pass"])
    print(f"| command | wall (median of {args.repeats}) | x python -c pass | peak RSS | x python -c pass |")
    print("|---|---|---|---|---|")
    for name in ROWS:
        t, m = statistics.median(times[name]), statistics.median(memory[name])
        print(f"| `{name}` | {t:.3f} s | {t / base_t:.1f} | {m:.0f} MiB | {m / base_m:.1f} |")


if __name__ == "__main__":
    main()
