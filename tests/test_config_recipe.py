"""Recipes: YAML loading, defaults < recipe < overrides, extends, type coercion, the shipped recipes."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import pytest
import yaml

from bike_cli.config.recipe import ORIGINS, _read_recipe, build_config, config_to_dict
from bike_cli.config.stages import DEFAULT_TEMPLATE, TrainVideoConfig
from bike_cli.errors import InputError
from bike_cli.io.train_state import save_resolved

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STAGE = "train-video"
DATA_FIELDS = ("features", "videos", "root", "classes", "val_features", "val_videos", "val_root")


def load_recipe(path: str | Path) -> dict:
    """The settings of a recipe file with its `extends` chain merged in (`stage` kept, if any)."""
    return {key: setting.value for key, setting in _read_recipe(Path(path)).items()}


def _video_recipes() -> list[Path]:
    """Every YAML recipe of the paper's experiments under recipes/ (not recipes/modern/), except those
    marked for another stage."""
    return [p for p in sorted(RECIPES.rglob("*.y*ml"))
            if load_recipe(p).get("stage", STAGE) == STAGE and "modern" not in p.relative_to(RECIPES).parts]


MODERN = sorted((RECIPES / "modern").glob("*.yaml"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class OtherStageConfig:
    """A second settings dataclass: the loader is not tied to TrainVideoConfig."""

    lexicon: Path = Path("lexicons/k400.txt")
    top_k: int = 5
    margin: float | None = None
    names: list[str] = field(default_factory=list)


# ---- the shipped recipes -------------------------------------------------------------------------


def test_recipes_folder_holds_the_papers_experiments():
    names = {p.name for p in _video_recipes()}
    for expected in ("k400_vitb32_8f.yaml", "k400_vitb16_8f.yaml", "k400_vitl14_8f.yaml", "k400_vitl14_16f.yaml",
                     "k400_vitl14-336_8f.yaml", "k400_vitl14-336_16f.yaml", "k400_vitl14-336_32f.yaml",
                     "fewshot_ucf101_vitl14_8f.yaml", "fewshot_hmdb51_vitl14_8f.yaml", "fewshot_k400_vitl14_8f.yaml",
                     "ucf101_vitl14_16f.yaml", "hmdb51_vitl14_16f.yaml", "anet_vitl14_16f.yaml",
                     "charades_vitl14_16f.yaml"):
        assert expected in names


@pytest.mark.parametrize("path", _video_recipes(), ids=lambda p: p.name)
def test_every_recipe_builds_a_train_video_config(path):
    config = build_config(TrainVideoConfig, path, {}, stage=STAGE)
    assert config.model in open_clip.list_models()
    assert config.pretrained == "openai"
    assert "openai" in open_clip.list_pretrained_tags_by_model(config.model)
    assert config.quick_gelu is True  # OpenAI weights, also when --pretrained names a state-dict file
    assert all(getattr(config, name) is None for name in DATA_FIELDS), "data comes from the command line"
    assert not config.out.is_absolute()


def _paper_epochs(name: str, model: str) -> int:
    """Epochs of Table A.1 (ViT-B 30, ViT-L 20), Supplementary A.1 (few-shot) and B.1 (UCF/HMDB)."""
    if name.startswith("fewshot_k400"):
        return 2
    if "fewshot" in name or name.startswith("shotlist_"):  # shotlist_*: Table 4's settings on published lists
        return 10
    return 30 if name.startswith(("ucf101", "hmdb51")) or model.startswith("ViT-B") else 20


@pytest.mark.parametrize("path", _video_recipes(), ids=lambda p: p.name)
def test_every_recipe_keeps_the_papers_training_settings(path):
    config = build_config(TrainVideoConfig, path, {}, stage=STAGE)
    assert (config.batch_size, config.lr, config.clip_lr_ratio, config.weight_decay) == (256, 5e-5, 0.1, 0.2)
    assert (config.tau, config.templates) == (0.01, ["This is a video about {}"])
    assert config.head == ("mean" if "meanpool" in path.name else "vcs")
    assert config.epochs == _paper_epochs(path.name, config.model)


@pytest.mark.parametrize("path", [p for p in _video_recipes() if not p.name.startswith("base_")], ids=lambda p: p.name)
def test_recipe_names_match_model_frames_and_out(path):
    config = build_config(TrainVideoConfig, path, {}, stage=STAGE)
    backbone = re.search(r"_(vitb32|vitb16|vitl14-336|vitl14)_", path.name).group(1)
    models = {"vitb32": "ViT-B-32", "vitb16": "ViT-B-16", "vitl14": "ViT-L-14", "vitl14-336": "ViT-L-14-336"}
    assert config.model == models[backbone]
    assert config.frames == int(re.search(r"_(\d+)f", path.name).group(1))
    assert config.out == Path("runs") / path.stem


def test_fewshot_recipes_default_to_two_shots_from_clip():
    for path in RECIPES.glob("fewshot_*.yaml"):
        config = build_config(TrainVideoConfig, path, {}, stage=STAGE)
        assert (config.shots, config.model, config.frames, config.temporal) == (2, "ViT-L-14", 8, "none")
        assert build_config(TrainVideoConfig, path, {"shots": 5}, stage=STAGE).shots == 5


def test_finetune_recipes_start_from_the_out_folder_of_a_matching_k400_recipe():
    k400 = {c.out: c for c in (build_config(TrainVideoConfig, p, {}) for p in RECIPES.glob("k400_*.yaml"))}
    finetunes = [p for p in _video_recipes() if p.name.startswith(("ucf101", "hmdb51", "anet", "charades"))]
    assert len(finetunes) == 8
    for path in finetunes:
        config = build_config(TrainVideoConfig, path, {}, stage=STAGE)
        source = k400[config.init_from]
        assert (source.model, source.frames, config.frames) == (config.model, 16, 16)
        for name in ("head", "temporal", "temporal_layers"):  # the checkpoint must fit this Video branch
            assert getattr(source, name) == getattr(config, name)


def test_readme_table_lists_every_experiment_recipe():
    readme = (RECIPES / "README.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([^`]+\.yaml)` \|", readme, flags=re.MULTILINE))
    experiments = {p.name for p in _video_recipes() if not p.name.startswith("base_")}
    assert rows == experiments


@pytest.mark.parametrize("path", MODERN, ids=lambda p: p.name)
def test_modern_backbone_recipes_name_a_real_tag_and_keep_table_a1(path):
    config = build_config(TrainVideoConfig, path, {}, stage=STAGE)
    tag = open_clip.get_pretrained_cfg(config.model, config.pretrained)
    assert tag, f"{config.model} has no pretrained tag {config.pretrained!r}"
    assert config.quick_gelu is None and not tag.get("quick_gelu", False)  # the tag decides: off
    assert all(getattr(config, name) is None for name in DATA_FIELDS)
    assert (config.batch_size, config.lr, config.clip_lr_ratio, config.head) == (256, 5e-5, 0.1, "vcs")
    assert config.out == Path("runs") / path.stem


def test_modern_recipes_come_in_frozen_and_end_to_end_pairs_marked_unmeasured():
    stems = {p.stem for p in MODERN}
    backbones = {s.rsplit("_8f_", 1)[0] for s in stems}
    assert len(backbones) == 3 and stems == {f"{b}_8f_{m}" for b in backbones for m in ("frozen", "end_to_end")}
    readme = (RECIPES / "README.md").read_text(encoding="utf-8")
    for path in MODERN:
        row = next(line for line in readme.splitlines() if f"`modern/{path.name}`" in line)
        assert "unmeasured" in row


# ---- precedence, extends, stage ------------------------------------------------------------------


def test_precedence_defaults_then_recipe_then_overrides(tmp_path):
    recipe = _write(tmp_path / "r.yaml", "epochs: 3\nlr: 1.0e-4\nmodel: ViT-B-16\n")
    config = build_config(TrainVideoConfig, recipe, {"epochs": 7})
    default = TrainVideoConfig()
    assert config.epochs == 7  # override beats recipe
    assert config.lr == 1e-4 and config.model == "ViT-B-16"  # recipe beats default
    assert config.weight_decay == default.weight_decay and config.frames == default.frames  # untouched
    assert build_config(TrainVideoConfig, None, {}) == default


def test_extends_chain_merges_and_is_relative_to_the_recipe_folder(tmp_path, monkeypatch):
    _write(tmp_path / "bases" / "grand.yaml", "stage: train-video\nepochs: 1\nlr: 1.0e-3\nframes: 4\n")
    _write(tmp_path / "bases" / "parent.yaml", "extends: grand.yaml\nepochs: 2\nframes: 16\n")
    child = _write(tmp_path / "child.yaml", "extends: bases/parent.yaml\nframes: 32\n")
    monkeypatch.chdir(_write(tmp_path / "elsewhere" / "x", "").parent)
    config = build_config(TrainVideoConfig, child, {}, stage=STAGE)
    assert (config.frames, config.epochs, config.lr) == (32, 2, 1e-3)
    assert load_recipe(child) == {"stage": "train-video", "epochs": 2, "lr": 1e-3, "frames": 32}


def test_error_in_an_extended_recipe_names_that_file_and_line(tmp_path):
    _write(tmp_path / "base.yaml", "frames: 8\nepochs: ten\n")
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\n")
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'base.yaml'}:2: epochs: 'ten' is not an integer")):
        build_config(TrainVideoConfig, child, {})


def test_extends_cycle_and_missing_parent_are_errors(tmp_path):
    a = _write(tmp_path / "a.yaml", "extends: b.yaml\n")
    _write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(InputError, match="cycle"):
        load_recipe(a)
    orphan = _write(tmp_path / "orphan.yaml", "frames: 8\nextends: nowhere.yaml\n")
    missing = f"{orphan}:2: extends: recipe {tmp_path / 'nowhere.yaml'} not found"
    with pytest.raises(InputError, match=re.escape(missing)):
        load_recipe(orphan)


def test_recipe_for_another_stage_is_refused(tmp_path):
    recipe = _write(tmp_path / "attrs.yaml", "stage: train-attrs\nepochs: 3\n")
    refused = f"{recipe}:1: this recipe is for stage 'train-attrs', not 'train-video'"
    with pytest.raises(InputError, match=re.escape(refused)):
        build_config(TrainVideoConfig, recipe, {}, stage=STAGE)
    child = _write(tmp_path / "child.yaml", "extends: attrs.yaml\n")  # the stage is inherited
    with pytest.raises(InputError, match="train-attrs"):
        build_config(TrainVideoConfig, child, {}, stage=STAGE)
    assert build_config(TrainVideoConfig, recipe, {}).epochs == 3  # no expected stage: no check


# ---- unknown keys and values ---------------------------------------------------------------------


def test_unknown_recipe_key_names_file_line_and_close_match(tmp_path):
    recipe = _write(tmp_path / "r.yaml", "frames: 8\nepoch: 3\n")
    with pytest.raises(InputError, match=re.escape(f"{recipe}:2: unknown setting 'epoch'; did you mean 'epochs'?")):
        build_config(TrainVideoConfig, recipe, {})


def test_unknown_override_key_is_reported_with_suggestion():
    with pytest.raises(InputError, match=r"command line: unknown setting 'batchsize'; did you mean 'batch_size'"):
        build_config(TrainVideoConfig, None, {"batchsize": 64})


def test_unknown_key_without_close_match_lists_the_known_settings(tmp_path):
    recipe = _write(tmp_path / "r.yaml", "zzzz: 1\n")
    with pytest.raises(InputError, match="known settings: features, videos"):
        build_config(TrainVideoConfig, recipe, {})


@pytest.mark.parametrize("line, message", [
    ("epochs: ten", "epochs: 'ten' is not an integer"),
    ("epochs: 2.5", "epochs: 2.5 is not an integer"),
    ("epochs: true", "epochs: True is not an integer"),
    ("lr: fast", "lr: 'fast' is not a number"),
    ("lr: .nan", "lr: nan is not a finite number"),
    ("resume: maybe", "resume: 'maybe' is not true or false"),
    ("model: 32", "model: 32 is not a string"),
    ("out: [a, b]", "out: ['a', 'b'] is not a path"),
    ("templates: {a: 1}", "templates: {'a': 1} is not a list"),
    ("templates: ['ok {}', 3]", "templates[1]: 3 is not a string"),
    ("epochs: null", "epochs: null is not allowed here; expected an integer"),
])
def test_bad_values_name_file_line_key_and_value(tmp_path, line, message):
    recipe = _write(tmp_path / "x.yaml", f"frames: 8\n{line}\n")
    with pytest.raises(InputError, match=re.escape(f"{recipe}:2: {message}")):
        build_config(TrainVideoConfig, recipe, {})


def test_values_are_coerced_to_the_annotated_types(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = _write(tmp_path / "sub" / "r.yaml",
                    "lr: 5e-5\nwarmup_epochs: 5\nfeatures: data/train.h5\nresume: 'yes'\nquick_gelu: false\n")
    config = build_config(TrainVideoConfig, recipe, {"epochs": "12", "root": "/videos", "grad_checkpointing": "on"})
    assert config.lr == 5e-5 and isinstance(config.lr, float)  # YAML 1.1 reads 5e-5 as a string
    assert config.warmup_epochs == 5.0 and isinstance(config.warmup_epochs, float)
    assert config.features == Path("data/train.h5")  # relative to the current directory, not to sub/
    assert (config.resume, config.quick_gelu, config.grad_checkpointing) == (True, False, True)
    assert config.epochs == 12 and config.root == Path("/videos")


def test_none_only_for_optional_fields(tmp_path):
    recipe = _write(tmp_path / "r.yaml", "shots: null\nquick_gelu: null\n")
    config = build_config(TrainVideoConfig, recipe, {})
    assert config.shots is None and config.quick_gelu is None
    fewshot = _write(tmp_path / "f.yaml", "shots: 4\n")
    assert build_config(TrainVideoConfig, fewshot, {}).shots == 4
    assert build_config(TrainVideoConfig, fewshot, {"shots": None}).shots is None
    with pytest.raises(InputError, match="command line: frames: null is not allowed"):
        build_config(TrainVideoConfig, None, {"frames": None})


def test_templates_list_of_strings(tmp_path):
    recipe = _write(tmp_path / "r.yaml", "templates:\n  - 'a video of {}'\n  - 'This is a video about {}: yes'\n")
    assert build_config(TrainVideoConfig, recipe, {}).templates == ["a video of {}", "This is a video about {}: yes"]
    single = _write(tmp_path / "s.yaml", "templates: 'a clip of {}'\n")
    assert build_config(TrainVideoConfig, single, {}).templates == ["a clip of {}"]
    assert build_config(TrainVideoConfig, None, {"templates": ("x {}", "y {}")}).templates == ["x {}", "y {}"]
    assert build_config(TrainVideoConfig, None, {}).templates == [DEFAULT_TEMPLATE]


def test_loader_is_generic_over_dataclasses(tmp_path):
    recipe = _write(tmp_path / "r.yaml", "top_k: 3\nmargin: '0.5'\nnames: [a, b]\n")
    config = build_config(OtherStageConfig, recipe, {"lexicon": "other.txt"})
    assert config == OtherStageConfig(lexicon=Path("other.txt"), top_k=3, margin=0.5, names=["a", "b"])
    with pytest.raises(InputError, match="did you mean 'top_k'"):
        build_config(OtherStageConfig, None, {"topk": 1})


# ---- reading files -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("epochs: [1, 2\n", r"r\.yaml:2: invalid YAML"),
    ("- epochs\n- 3\n", r"r\.yaml: a recipe is a mapping of setting names to values, not a list"),
    ("epochs: 3\nframes: 8\nepochs: 4\n", r"r\.yaml:3: 'epochs' is set twice \(first on line 1\)"),
    ("1: 3\n", r"r\.yaml: setting name 1 is not a string"),
])
def test_malformed_recipe_files_are_input_errors(tmp_path, text, message):
    recipe = _write(tmp_path / "r.yaml", text)
    with pytest.raises(InputError, match=message):
        load_recipe(recipe)


def test_missing_recipe_and_empty_recipe(tmp_path):
    with pytest.raises(InputError, match=re.escape(f"recipe not found: {tmp_path / 'none.yaml'}")):
        build_config(TrainVideoConfig, tmp_path / "none.yaml", {})
    empty = _write(tmp_path / "empty.yaml", "# nothing yet\n")
    assert build_config(TrainVideoConfig, empty, {}) == TrainVideoConfig()


# ---- resolved configs ----------------------------------------------------------------------------


def test_resolved_config_round_trip(tmp_path):
    config = build_config(TrainVideoConfig, RECIPES / "k400_vitl14-336_32f.yaml", {
        "videos": Path("lists/train list.csv"), "root": Path("/data/k400"), "shots": None, "quick_gelu": True,
        "templates": ["a video of {}", "'quoted': {}", "null"], "lr": 1.25e-5, "warmup_epochs": 0.5,
    }, stage=STAGE)
    path = save_resolved(config, tmp_path / "run" / "config.yaml", stage=STAGE)
    assert build_config(TrainVideoConfig, path, {}, stage=STAGE) == config
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["stage"] == STAGE and data["videos"] == "lists/train list.csv" and data["shots"] is None
    assert set(data) - {"stage"} == {f.name for f in dataclasses.fields(TrainVideoConfig)} - {ORIGINS}  # not a setting
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary file left behind


def test_save_resolved_replaces_an_existing_file(tmp_path):
    path = _write(tmp_path / "config.yaml", "garbage: [\n")
    save_resolved(TrainVideoConfig(epochs=4), path)
    assert build_config(TrainVideoConfig, path, {}).epochs == 4


def test_config_to_dict_has_plain_values_in_field_order():
    data = config_to_dict(TrainVideoConfig(features=Path("f.h5")))
    assert list(data) == [f.name for f in dataclasses.fields(TrainVideoConfig) if f.name != ORIGINS]  # not a setting
    assert data["features"] == "f.h5" and data["out"] == "runs/video" and data["templates"] == [DEFAULT_TEMPLATE]
    with pytest.raises(TypeError):
        config_to_dict(TrainVideoConfig)
