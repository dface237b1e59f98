"""Which open_clip families bike runs end to end: extract-features, zero-shot eval, one train-video epoch.

For every family of `open_clip.list_models()` (grouped by name, see `family`), the smallest
architecture (fewest parameters, counted on the meta device) is run with random weights
(`--pretrained none`, so it works offline) through the real CLI, each stage a subprocess:

1. `extract-features` of 2 generated clips (4 frames, 1x1 view);
2. `eval --head vcs` zero-shot on that cache;
3. `train-video --head vcs --temporal transformer` for one epoch on that cache.

A stage that fails records the last line bike printed (its error message). Architectures over
`--max-params` are listed as not run (CPU budget). The table goes to docs/models.md (`--out`).

    .venv/bin/python benchmarks/models_matrix.py --out docs/models.md
    # then, in an environment with `pip install '.[hf]'`, the families that need transformers:
    HF_HUB_OFFLINE=1 python benchmarks/models_matrix.py --out docs/models.md --append --only SigLIP SigLIP2 ...
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch

from bike_cli.data.synthetic import make_sample_dataset
from bike_cli.models.registry import register_configs

BIKE = [sys.executable, "-m", "bike_cli"]


def family(name: str) -> str:
    """A family label from an architecture name (one row of the matrix per family)."""
    rules = [
        (r"^coca_roberta", "CoCa + RoBERTa (HF text)"), (r"^coca", "CoCa"),
        (r"SigLIP2", "SigLIP2"), (r"SigLIP", "SigLIP"), (r"^nllb.*siglip", "NLLB-SigLIP (HF text)"),
        (r"^nllb", "NLLB-CLIP (HF text)"), (r"^xlm-roberta", "XLM-RoBERTa CLIP (HF text)"),
        (r"^roberta", "RoBERTa CLIP (HF text)"), (r"^mt5", "mT5 CLIP (HF text)"),
        (r"^EVA01", "EVA01-CLIP"), (r"^EVA02", "EVA02-CLIP"), (r"^MobileCLIP2", "MobileCLIP2"),
        (r"^MobileCLIP", "MobileCLIP"), (r"^PE-Core", "PE-Core"), (r"^ViTamin", "ViTamin"),
        (r"CLIPA", "CLIPA"), (r"worldwide", "MetaCLIP 2 worldwide"), (r"^RN", "ResNet (OpenAI CLIP)"),
        (r"^convnext", "ConvNeXt"), (r"^swin", "Swin (timm)"), (r"^vit_", "timm ViT"),
        (r"^ViT", "ViT (OpenAI-style CLIP)"), (r"^bike-", "bike test configs"),
    ]
    return next((label for pattern, label in rules if re.search(pattern, name)), name)


def tokenizer_kind(name: str) -> str:
    text = open_clip.get_model_config(name).get("text_cfg", {})
    if text.get("hf_tokenizer_name"):
        return f"HF `{text['hf_tokenizer_name']}` (downloaded)"
    if "siglip" in name.lower():
        return "SigLIP SentencePiece (downloaded)"
    return "CLIP BPE (bundled)"


def parameter_count(name: str) -> float:
    """Parameters of the architecture, built on the meta device (no memory); inf when it cannot be."""
    try:
        with torch.device("meta"):
            model = open_clip.create_model(name, pretrained=None, device="meta")
        return float(sum(p.numel() for p in model.parameters()))
    except Exception:  # e.g. HF towers without transformers
        return float("inf")


def smallest_per_family() -> dict[str, tuple[str, float]]:
    best: dict[str, tuple[str, float]] = {}
    for name in open_clip.list_models():
        label = family(name)
        if label == "bike test configs" or name.endswith("-quickgelu"):
            continue
        count = parameter_count(name)
        key = (count, "base" not in name, len(name))  # uncountable (HF) towers: prefer a "base" one
        if label not in best or key < (best[label][1], "base" not in best[label][0], len(best[label][0])):
            best[label] = (name, count)
    return best


def run_stage(args: list[str], timeout: int) -> tuple[bool, str, float]:
    started = time.perf_counter()
    try:
        env = {**os.environ, "COLUMNS": "1000"}  # one line per message: the reason is read from it
        proc = subprocess.run([*BIKE, *args], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s", time.perf_counter() - started
    seconds = time.perf_counter() - started
    if proc.returncode == 0:
        return True, "", seconds
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    start = max((i for i, ln in enumerate(lines) if ln.startswith("error:")), default=len(lines) - 1)
    reason = " ".join(" ".join(lines[start:]).split()).removeprefix("error: ")
    return False, reason[:400] or f"exit {proc.returncode}", seconds


def run_family(name: str, data, work: Path, timeout: int) -> list[tuple[bool, str, float]]:
    cache, common = work / f"{name}.h5", ["--frames", "4", "--workers", "0"]
    extract = run_stage(["extract-features", "--list", str(data), "--classes", str(data.parent / "classes.csv"),
                         "--out", str(cache), "--model", name, "--pretrained", "none", *common], timeout)
    if not extract[0]:
        return [extract, (False, "no cache (extract failed)", 0.0), (False, "no cache (extract failed)", 0.0)]
    evaluate = run_stage(["eval", "--features", str(cache), "--out", str(work / f"{name}-eval"), "--head", "vcs",
                          *common], timeout)
    train = run_stage(["train-video", "--features", str(cache), "--out", str(work / f"{name}-run"), "--epochs", "1",
                       "--batch-size", "2", "--head", "vcs", "--temporal", "transformer", "--temporal-layers", "1",
                       *common], timeout)
    return [extract, evaluate, train]


def two_clip_list(root: Path) -> Path:
    data = make_sample_dataset(root, videos_per_class=1, val_fraction=0.0, num_frames=8, seed=0)
    lines = data.train.read_text().splitlines()
    header = [lines[0]] if not lines[0].split(",")[-1].strip().lstrip("-").isdigit() else []
    listing = root / "two.csv"
    listing.write_text("\n".join(header + lines[len(header):len(header) + 2]) + "\n")
    return listing


def cell(result: tuple[bool, str, float]) -> str:
    ok, reason, seconds = result
    if ok:
        return f"pass ({seconds:.0f} s)"
    return reason if reason.startswith(("not run", "no cache")) else f"FAIL: {reason.replace('|', '/')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/models.md"))
    parser.add_argument("--max-params", type=float, default=4e8, help="skip architectures larger than this")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per stage")
    parser.add_argument("--only", nargs="*", default=None, help="run only these families (labels)")
    parser.add_argument("--append", action="store_true",
                        help="append the table as a section of --out (e.g. a second run with transformers installed)")
    args = parser.parse_args()
    register_configs()
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        listing = two_clip_list(Path(tmp) / "data")
        for label, (name, count) in sorted(smallest_per_family().items()):
            if args.only is not None and label not in args.only:
                continue
            size = "?" if count == float("inf") else f"{count / 1e6:.0f} M"
            if count != float("inf") and count > args.max_params:
                skipped = (False, f"not run: {size} parameters, over this matrix's CPU budget", 0.0)
                rows.append((label, name, size, tokenizer_kind(name), [skipped, (False, "not run", 0.0),
                                                                       (False, "not run", 0.0)]))
                continue
            print(f"{label}: {name} ({size})", flush=True)
            rows.append((label, name, size, tokenizer_kind(name), run_family(name, listing, Path(tmp), args.timeout)))
    write_table(args.out, rows, time.perf_counter() - started, args.append)


def _table(rows: list) -> list[str]:
    lines = ["| family | example architecture | parameters | tokenizer | extract | eval | train-video |",
             "|---|---|---|---|---|---|---|"]
    for label, name, size, tok, results in rows:
        lines.append(f"| {label} | `{name}` | {size} | {tok} | " + " | ".join(cell(r) for r in results) + " |")
    return lines


def _machine(seconds: float) -> str:
    spec = importlib.util.find_spec("transformers")  # its version, never its path: the docs name no local folder
    hf = f"transformers {importlib.metadata.version('transformers')}" if spec else "transformers not installed"
    return (f"Machine: {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"open_clip {open_clip.__version__}, {hf}; this run {seconds / 60:.0f} min.")


def write_table(out: Path, rows: list, seconds: float, append: bool = False) -> None:
    if append:
        section = ["", "## The families that need transformers, with it installed", "",
                   "Produced by the same script with `--append --only ...` in a virtual environment that has",
                   "`pip install '.[hf]'`, with `HF_HUB_OFFLINE=1` (this machine cannot reach the Hugging Face hub,",
                   "so the tokenizers and HF tower configs these families download cannot be had). In that",
                   "environment tests/test_hf_text_tower.py (a local BERT tower through extract, eval and",
                   "train-video) passes.", _machine(seconds), "",
                   *_table(rows)]
        out.write_text(out.read_text().rstrip("\n") + "\n" + "\n".join(section) + "\n")
        return
    lines = [
        "# Models: which open_clip families bike runs",
        "",
        "Produced by `python benchmarks/models_matrix.py --out docs/models.md`: for each family of",
        "`open_clip.list_models()`, its smallest architecture with random weights (`--pretrained none`)",
        "through `extract-features` (2 generated clips, 4 frames), zero-shot `eval --head vcs` and one",
        "epoch of `train-video --head vcs --temporal transformer`, each a subprocess of the real CLI.",
        _machine(seconds),
        "A failure shows the message bike printed. Families whose tokenizer is downloaded from the",
        "Hugging Face hub cannot be evaluated offline (their text-tower adapters are tested with tokenizers",
        "and towers the tests build themselves: tests/test_models_text_towers.py, and",
        "tests/test_hf_text_tower.py, a BERT tower and word-level tokenizer written by the test, which",
        "passes where transformers is installed).",
        "",
        *_table(rows),
    ]
    out.write_text("\n".join(lines + ["", NOTES]) + "\n")


NOTES = """## How bike adapts to a model

- **Text side** (`bike_cli/models/text_towers.py`): the kind of text tower is read from the model
  object: CLIP's built-in tower (OpenAI CLIP, RN, ConvNeXt, timm towers), an open_clip
  `TextTransformer` (EVA02, SigLIP, PE-Core, MobileCLIP, ViTamin: argmax / last / first / eos
  pooling, causal or bidirectional, projection matrix / `nn.Linear` / none), CoCa's tower (pooled =
  its appended CLS row) or a Hugging Face tower (`HFTextEncoder`). Each gives the pooled class
  embedding (equal to the model's `encode_text`) and the per-token embeddings through the same
  final norm and projection, which VCS uses as queries.
- **VCS word tokens** are found by tokenising each prompt with and without the class name (any
  tokenizer: CLIP's BPE, SentencePiece, byte-level BPE, with or without start/end tokens).
  `--vcs-tokens all` keeps every context position with CLIP's BPE (the authors' code) and drops the
  pad tokens of tokenizers that pad with one.
- **Image side** (`bike_cli/models/clip.py`, `bike_cli/data/sampling.py`): input size, mean/std
  and resize mode from the model's preprocess config (a tag's own; for a checkpoint file or random
  weights what all the architecture's tags agree on). A single-crop view is made in that resize
  mode (`squash` for SigLIP and PE-Core, `shortest` for CLIP, `longest` pads); three-crop views stay
  square crops of the short-side resize. The decoder resizes with its own scaler: the model's
  `interpolation` is recorded in the cache, not applied. Training crops are unchanged.
- **Scores**: zero-shot `eval` scales the cosine logits by the model's own logit scale, uncapped
  (SigLIP's is above CLIP's 100). A `logit_bias` (SigLIP) adds the same number to every class: it
  cancels in the softmax over classes, so bike's softmax-based scores, view averaging and fusion are
  unchanged. Training stays Eq. 7 with bike's learnable scale (capped at 100).
- **Optional packages**: Hugging Face towers and tokenizers need `pip install 'bike-cli[hf]'`
  (transformers, sentencepiece); without it bike says so in one line. Their tokenizers (and the
  HF towers' configs) are downloaded from the Hugging Face hub on first use, so they fail on a
  machine without that access even with the extra installed.
"""


if __name__ == "__main__":
    main()
