"""The README and docs/ say what bike does: names they give are the names bike computes."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bike_cli.cli.torch_pair import mismatch, pair_install_args
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


def _cpu_step() -> str:
    """The README's CPU-only install step: the one inline `pip install` command that names torch."""
    steps = [" ".join(step.split()) for step in re.findall(r"`(pip install [^`]*)`", README) if "torch" in step]
    assert len(steps) == 1, steps
    return steps[0]


def test_the_readme_cpu_step_installs_torch_and_torchvision_in_one_command_from_one_place():
    step = _cpu_step()
    assert step == f"pip install {pair_install_args('cpu')}"  # the command bike's own mismatch message gives
    words = shlex.split(step)
    assert "torchvision" in words and any(w.startswith("torch<=") for w in words)
    assert "--index-url" not in README  # it would drop PyPI: an unreachable index then leaves a torch from elsewhere
    assert words[words.index("--retries") + 1] == "0"  # no minutes of retries where the index cannot be reached
    # the cap is the one pyproject.toml sets, so the two commands after it keep this torch
    cap = re.search(r'"torch>=[\d.]+,<=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"'torch<={cap}'" in step and f"torch is capped at {cap}" in README


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel of `name` `version`: what pip needs to resolve it."""
    info = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                       + "".join(f"Requires-Dist: {r}\n" for r in requires))
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def _index(root: Path, wheels: dict[str, list[tuple[str, tuple[str, ...]]]]) -> str:
    """A PEP 503 simple index of minimal wheels under `root`; its URL."""
    for name, releases in wheels.items():
        page = root / "simple" / name
        page.mkdir(parents=True)
        links = [_wheel(page, name, version, requires) for version, requires in releases]
        page.joinpath("index.html").write_text("".join(
            f'<a href="{link.as_uri()}">{link.name}</a>\n' for link in links))
    return (root / "simple").as_uri()


@pytest.mark.slow
@pytest.mark.parametrize("cpu_index_answers", [True, False])
def test_the_readme_cpu_step_gives_a_pair_from_one_place_whether_or_not_the_cpu_index_answers(
        tmp_path, cpu_index_answers):
    pypi = _index(tmp_path / "pypi", {  # PyPI: unlabelled wheels, and a release newer than bike's cap
        "torch": [("2.14.1", ()), ("2.15.0", ())],
        "torchvision": [("0.29.1", ("torch==2.14.1",)), ("0.30.0", ("torch==2.15.0",))]})
    cpu = _index(tmp_path / "cpu", {
        "torch": [("2.14.1+cpu", ()), ("2.15.0+cpu", ())],
        "torchvision": [("0.29.1+cpu", ("torch==2.14.1",)), ("0.30.0+cpu", ("torch==2.15.0",))]})
    words = shlex.split(_cpu_step())
    words[words.index("--extra-index-url") + 1] = cpu if cpu_index_answers else "http://127.0.0.1:9/simple"
    report = tmp_path / "report.json"
    done = subprocess.run(  # --isolated: this machine's pip configuration and PIP_* variables play no part
        [sys.executable, "-m", "pip", *words[1:2], "--isolated", "--index-url", pypi, "--dry-run",
         "--ignore-installed", "--report", str(report), *words[2:]], capture_output=True, text=True)
    if done.returncode != 0 and "No module named pip" in done.stderr:
        pytest.skip("this Python has no pip")
    assert done.returncode == 0, done.stderr
    chosen = {item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    label = "+cpu" if cpu_index_answers else ""
    assert chosen == {"torch": f"2.14.1{label}", "torchvision": f"0.29.1{label}"}
    assert mismatch(chosen["torch"], chosen["torchvision"]) is None


def test_the_docs_name_no_developer_paths():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "recipes" / "README.md",
                 ROOT / "lexicons" / "README.md"]:
        found = re.findall(r"(?<![\w.])/(?:work|home|root|Users|opt)/\S*|venv-\w+", path.read_text(encoding="utf-8"))
        assert not found, f"{path.name} names a folder of the machine it was written on: {found}"


def _exit_code_paragraph() -> str:
    start = README.index("**Exit codes.**")
    return " ".join(README[start:README.index("\n\n", start)].split())


def test_the_exit_code_paragraph_says_which_bad_values_give_2_and_which_give_1():
    paragraph = _exit_code_paragraph()
    two = paragraph.split(" 2: ", 1)[1].split(" 1: ", 1)[0]
    one = paragraph.split(" 1: ", 1)[1].split(" 130: ", 1)[0]
    for kind in ("Click", "unknown option", "missing option, argument or value", "not of the option's type"):
        assert kind in two, kind
    for kind in ("bike checks itself", "out of its range", "not among an option's choices", "files",
                 "torch and a torchvision"):
        assert kind in one, kind


@pytest.mark.slow
@pytest.mark.parametrize("args, code, example", [
    (["eval", "--features", "x.h5", "--out", "o", "--batch-size", "abc"], 2, "`--batch-size abc`"),
    (["train-video", "--epochs"], 2, "`--epochs` with nothing after it"),
    (["fuse", "a.csv", "b.csv", "--out", "c.csv", "--bogus"], 2, "an unknown option"),
    (["fuse", "a.csv", "b.csv", "--out", "c.csv", "--protocol", "bogus"], 1, "`--protocol bogus`"),
    (["fuse", "a.csv", "b.csv", "--out", "c.csv", "--weights", "2,3"], 1, "`--weights` that do not sum to 1"),
    (["fuse", "a.csv", "b.csv", "--out", "c.csv"], 1, "files (missing"),
])
def test_the_exit_code_paragraphs_examples_give_the_codes_it_names(tmp_path, args, code, example):
    paragraph = _exit_code_paragraph()
    assert example in paragraph.split(f" {code}: ", 1)[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "bike_cli", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr


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
