"""A recipe's settings are never blamed on an option the user did not type: a message names the recipe file,
line and key a value came from and the option that changes it; a recipe's settings for its model
(`pretrained`, `quick_gelu`) follow a `--model` (or a `--pretrained` tag) the user types instead of the
recipe's, with an info line; recipes/README.md says so."""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path

import pytest
import yaml
from cli_run import bike as run_bike

from bike_cli.config.recipe import FOLLOWS, build_config, setting_source, setting_text
from bike_cli.config.stages import TrainVideoConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
K400_B32 = RECIPES / "k400_vitb32_8f.yaml"
BASE = RECIPES / "base_video.yaml"
FAST = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--frames", "4", "--temporal-layers", "1"]


bike = partial(run_bike, timeout=300, columns=400)


def flat(text: str) -> str:
    return " ".join(text.split())


def line_of(path: Path, key: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(f"{key}:"))


# ----------------------------------------------------------------------------- through the command line


@pytest.mark.slow
def test_a_recipe_for_another_model_trains_the_model_typed(tmp_path, tiny_cache):
    """The issue's case: the ViT-B/32 recipe with --model bike-tiny --pretrained none (what every run_*.sh
    does with MODEL=bike-tiny) trains bike-tiny with bike-tiny's activation, not the recipe's QuickGELU."""
    run = tmp_path / "run"
    done = bike("train-video", "--recipe", str(K400_B32), "--model", "bike-tiny", "--pretrained", "none",
                "--features", str(tiny_cache), "--out", str(run), *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    text = flat(done.stderr)
    assert (f"--model bike-tiny is not the recipe's model (ViT-B-32, {K400_B32}:{line_of(K400_B32, 'model')}): "
            f"leaving out the recipe's quick_gelu: true ({BASE}:{line_of(BASE, 'quick_gelu')})") in text
    assert yaml.safe_load((run / "config.yaml").read_text())["quick_gelu"] is None


@pytest.mark.slow
def test_a_recipes_quick_gelu_in_the_way_names_the_recipe_key_and_the_option(tmp_path, tiny_cache):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("model: bike-tiny\npretrained: none\nquick_gelu: true\n")
    done = bike("train-video", "--recipe", str(recipe), "--features", str(tiny_cache), "--out", str(tmp_path / "r"),
                *FAST)
    assert done.returncode == 1
    text = flat(done.stderr)
    assert (f"quick_gelu: True in this run's bike-tiny ({recipe}:3, key quick_gelu; --no-quick-gelu changes it), "
            f"False in {tiny_cache}") in text
    assert "in --pretrained" not in text  # the option the user never typed is not blamed


@pytest.mark.slow
def test_a_recipes_model_other_than_the_caches_is_named_as_the_recipes(tmp_path, tiny_cache):
    done = bike("train-video", "--recipe", str(K400_B32), "--features", str(tiny_cache), "--out", str(tmp_path / "r"),
                *FAST)
    assert done.returncode == 1
    text = flat(done.stderr)
    assert (f"model: ViT-B-32 ({K400_B32}:{line_of(K400_B32, 'model')}) differs from bike-tiny, the model that "
            f"made {tiny_cache}: pass --model bike-tiny") in text
    assert "--model ViT-B-32" not in text


# ----------------------------------------------------------------------------- the rule, where configs are built


@pytest.mark.parametrize("recipe", sorted(RECIPES.rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipes_model_settings_follow_a_typed_model(recipe):
    config = build_config(TrainVideoConfig, recipe, {"model": "bike-tiny", "pretrained": "none"})
    assert config.quick_gelu is None and config.pretrained == "none"
    assert build_config(TrainVideoConfig, recipe, {"model": "bike-tiny"}).pretrained is None


def test_the_recipes_own_model_keeps_its_settings(caplog):
    with caplog.at_level(logging.INFO, logger="bike_cli"):
        for model in ("ViT-B-32", "ViT-B/32"):
            config = build_config(TrainVideoConfig, K400_B32, {"model": model})
            assert (config.pretrained, config.quick_gelu) == ("openai", True)
    assert "leaving out" not in caplog.text


def test_a_typed_setting_is_kept_when_the_model_changes():
    config = build_config(TrainVideoConfig, K400_B32, {"model": "bike-tiny", "quick_gelu": True})
    assert config.quick_gelu is True and config.origins["quick_gelu"] == "command line"


def test_a_pretrained_tag_drops_the_recipes_quick_gelu_a_weights_file_keeps_it(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bike_cli"):
        assert build_config(TrainVideoConfig, K400_B32, {"pretrained": "laion2b_s34b_b79k"}).quick_gelu is None
    assert "--pretrained laion2b_s34b_b79k is not the recipe's pretrained (openai" in caplog.text
    assert build_config(TrainVideoConfig, K400_B32, {"pretrained": "OpenAI"}).quick_gelu is True  # the same tag
    weights = tmp_path / "ViT-B-32.pt"
    weights.write_bytes(b"state dict")
    assert build_config(TrainVideoConfig, K400_B32, {"pretrained": str(weights)}).quick_gelu is True


def test_origins_are_not_settings(tmp_path):
    from bike_cli.config.recipe import config_to_dict, resolved_yaml

    config = build_config(TrainVideoConfig, K400_B32, {"epochs": 3})
    assert config.origins["epochs"] == "command line" and config.origins["frames"].startswith(f"{K400_B32}:")
    assert "origins" not in config_to_dict(config) and "origins" not in resolved_yaml(config)
    assert config == build_config(TrainVideoConfig, None, config_to_dict(config))  # not compared
    resolved = tmp_path / "r.yaml"
    resolved.write_text("origins: {}\n")
    with pytest.raises(Exception, match="unknown setting 'origins'"):
        build_config(TrainVideoConfig, resolved, {})


def test_a_setting_is_named_by_where_it_came_from():
    config = build_config(TrainVideoConfig, K400_B32, {"epochs": 3, "quick_gelu": False})
    assert setting_text(config, "epochs") == "--epochs 3"
    assert setting_text(config, "quick_gelu") == "--no-quick-gelu"
    assert setting_text(config, "model") == f"model: ViT-B-32 ({K400_B32}:{line_of(K400_B32, 'model')})"
    assert setting_text(config, "init_from") == "init_from: null (bike's default)"
    recipe_gelu = build_config(TrainVideoConfig, K400_B32, {})
    assert setting_source(recipe_gelu, "quick_gelu", "x") == (f"{BASE}:{line_of(BASE, 'quick_gelu')}, key "
                                                              "quick_gelu; --no-quick-gelu changes it")
    assert setting_source(TrainVideoConfig(), "quick_gelu", "the weights' default") == (
        "the weights' default; --quick-gelu/--no-quick-gelu sets it")


# ----------------------------------------------------------------------------- the docs say so


def test_the_recipes_readme_says_how_overrides_treat_the_recipes_model_settings():
    text = flat((RECIPES / "README.md").read_text(encoding="utf-8"))
    assert "Any option typed on the command line wins over the recipe" in text
    follows = {"model": "A `--model` other than the recipe's leaves out the recipe's `pretrained` and `quick_gelu`",
               "pretrained": "a `--pretrained` tag other than the recipe's leaves out the recipe's `quick_gelu` (a "
                             "weights file keeps it"}
    assert set(follows) == set(FOLLOWS)
    for key, sentence in follows.items():
        assert sentence in text
        assert re.findall(r"`(\w+)`", sentence.split("leaves out")[1]) == list(FOLLOWS[key])
    example = re.search(r"`(quick_gelu: True in this run's ViT-B-32 \((\S+):(\d+), key quick_gelu; "
                        r"--no-quick-gelu changes it\))`", text)
    assert example, "the README shows a message naming a recipe key"
    assert (ROOT / example.group(2)) == BASE and int(example.group(3)) == line_of(BASE, "quick_gelu")
