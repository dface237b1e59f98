"""Peak memory of the stages that take many user items, at growing counts (bounded work).

Each run is one `bike` process under `/usr/bin/time -v` (its "Maximum resident set size"), with the
built-in random-weight model `bike-tiny` (64-d embeddings: the figures are what bike itself holds,
not a large CLIP's weights) on a small generated dataset (4 classes x 3 videos, 16 frames):

- `search --queries FILE --json` with N generated queries;
- `search --queries FILE --sheet S.png --top 3` with N queries (sheet rows), frames decoded from the videos;
- `gen-attributes --lexicon FILE` with N generated phrases;
- `extract-features --workers 32` on the 4 validation videos: the workers started (its log line) and the peak.

With --before DIR, the same runs also use the bike in DIR (e.g. a checkout of main) for comparison.

    .venv/bin/python benchmarks/bounded_memory.py --queries 1000 10000 100000 --sheet 70 700 \\
        --phrases 20000 200000 2000000 --out-json bounded.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("red", "blue", "green", "square", "circle", "moving", "left", "right", "up", "down", "a", "the",
         "person", "dog", "jumping", "running", "fast", "slow", "small", "large", "bright", "dark")


def texts(n: int, words: int, seed: int) -> list[str]:
    """`n` distinct generated texts of `words` words (plus a number, so none repeats)."""
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + f" {i}" for i in range(n)]


def peak_run(args: list[str], code: Path, cwd: Path) -> dict:
    """Run `python -m bike_cli ARGS` with `code` first on the path; its peak RSS (MiB), seconds, log."""
    env = {**os.environ, "PYTHONPATH": str(code), "COLUMNS": "200"}
    tic = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "bike_cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - tic
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    workers = re.search(r"--workers \d+: starting \d+[^\n]*", done.stderr)
    return {"rc": done.returncode, "peak_mib": int(peak.group(1)) / 1024 if peak else None,
            "seconds": round(seconds, 1), "workers_line": workers.group(0).rstrip() if workers else None,
            "error": done.stderr.strip().splitlines()[-1] if done.returncode else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--sheet", type=int, nargs="*", default=[70, 700])
    parser.add_argument("--phrases", type=int, nargs="*", default=[20000, 200000])
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--before", type=Path, help="another bike checkout to measure the same way")
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    codes = {"this": here, **({"before": args.before.resolve()} if args.before else {})}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from bike_cli.data.synthetic import make_sample_dataset

        data = make_sample_dataset(work / "data", videos_per_class=3, num_frames=16, seed=0)
        extract = ["extract-features", "--classes", str(data.classes), "--model", "bike-tiny", "--pretrained",
                   "none", "--frames", "4"]
        done = peak_run([*extract, "--list", str(data.train), "--out", str(work / "c.h5"), "--workers", "0"],
                        here, work)
        assert done["rc"] == 0, done
        cases = []
        for n in args.queries:
            (work / f"q{n}.txt").write_text("\n".join(texts(n, 4, n)) + "\n")
            cases.append(("search --queries", n, ["search", "--features", str(work / "c.h5"), "--queries",
                                                   str(work / f"q{n}.txt"), "--json", "-q"]))
        for n in args.sheet:
            (work / f"s{n}.txt").write_text("\n".join(texts(n, 4, n)) + "\n")
            cases.append(("search --sheet", n, ["search", "--features", str(work / "c.h5"), "--queries",
                                                 str(work / f"s{n}.txt"), "--top", "3", "--root", str(data.root),
                                                 "--sheet", str(work / f"sheet{n}.png"), "--json", "-q"]))
        for n in args.phrases:
            (work / f"p{n}.txt").write_text("\n".join(texts(n, 3, n)) + "\n")
            cases.append(("gen-attributes --lexicon", n, ["gen-attributes", "--features", str(work / "c.h5"),
                                                           "--lexicon", str(work / f"p{n}.txt"), "--out",
                                                           str(work / f"a{n}.csv"), "-q"]))
        cases.append(("extract-features --workers", args.workers,
                      [*extract, "--workers", str(args.workers), "--list", str(data.val), "--out",
                       str(work / "w.h5"), "--overwrite"]))
        for what, n, command in cases:
            for name, code in codes.items():
                run = peak_run(command, code, work)
                row = {"case": what, "count": n, "code": name, **run}
                results.append(row)
                print(json.dumps(row), flush=True)
                for stale in work.glob("*.phrases.pt"):
                    stale.unlink()  # each lexicon run encodes its phrases
    if args.out_json:
        args.out_json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
