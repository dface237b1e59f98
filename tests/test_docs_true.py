"""The README and docs/ say what bike does: names they give are the names bike computes."""

from __future__ import annotations

import re
from pathlib import Path

from bike_cli.config.stages import ExtractConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FORMATS = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
SETUP = (ROOT / "setup.py").read_text(encoding="utf-8")


def test_the_failures_csv_example_in_the_docs_is_the_name_extract_features_writes():
    for text in (README, FORMATS):
        example = re.search(r"`--out (\S+\.h5)` writes `(\S+\.csv)`", text)
        assert example, "the failures CSV default has a worked example"
        out, failures = example.groups()
        assert ExtractConfig(list_path=Path("list.csv"), out=Path(out)).failures_path == Path(failures)
        assert "OUT.failures.csv" not in text


def test_the_lexicons_readme_says_the_wheel_carries_the_lexicons():
    assert '"bike_cli.lexicons": "lexicons"' in SETUP  # the wheel ships lexicons/ as package data
    text = (ROOT / "lexicons" / "README.md").read_text(encoding="utf-8")
    assert "does not include" not in text
    assert "bike_cli/lexicons" in text


def test_the_cpu_only_torch_note_comes_before_the_two_commands():
    cpu_note = README.index("download.pytorch.org/whl/cpu")
    demo = README.index("pip install -e . && bike demo")
    tests = README.index("pip install -e '.[test]' && ruff check && pytest")
    assert cpu_note < demo < tests


def test_the_readme_says_where_shared_comes_from_and_that_its_tests_skip():
    section = README[:README.index("## The stages")]
    assert "../shared" in section
    assert re.search(r"skip", section)


def test_formats_says_metrics_jsonl_is_strict_json_and_its_one_writer_makes_it_so():
    import json

    from bike_cli.io.metrics_json import metrics_line

    row = next(line for line in FORMATS.splitlines() if line.startswith("| `metrics.jsonl` |"))
    assert "strict JSON" in row and "never `NaN`" in row and "`null`" in row
    assert json.loads(metrics_line({"epoch": 1, "val_mAP": float("nan")})) == {"epoch": 1, "val_mAP": None}
    assert "json.dumps" not in (ROOT / "bike_cli" / "engine" / "run_folder.py").read_text(encoding="utf-8")


def test_formats_names_the_plots_an_eval_removes_from_its_folders():
    from bike_cli.stages.evaluate import PLOT_FILES, plot_files

    paragraph = FORMATS[FORMATS.index("An evaluation removes the outputs"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    assert all(f"`{name}`" in paragraph for name in PLOT_FILES) and "never mixes two runs" in paragraph
    out, plots = Path("e"), Path("p")
    assert {path.parent for _, _, path in plot_files(out, plots)} == {out, out / "plots", plots}
