"""`bike demo`'s table of steps: each step's seconds are measured (stages replaced by fakes on a fake clock)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from bike_cli.config.stages import DemoConfig
from bike_cli.stages import demo
from bike_cli.stages.demo import run_demo


class Clock:
    """A clock that moves only when a fake stage says it took time."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


def fake_stages(monkeypatch, tmp_path: Path, clock: Clock, took: dict[str, float]) -> None:
    val_list = tmp_path / "val.csv"
    val_list.write_text("path,label\nv0.mp4,0\n")
    data = SimpleNamespace(root=tmp_path, train=tmp_path / "train.csv", val=val_list, classes=tmp_path / "c.txt")

    def stage(name: str, result):
        def run(*args, **kwargs):
            clock.now += took.get(name, 0.0)
            return result
        return run

    top1 = {"top1": 50.0}
    fakes = {
        "make_sample_dataset": SimpleNamespace(**vars(data)),
        "run_extraction": SimpleNamespace(cache=tmp_path / "x.h5", cached=4, seconds=1.0),
        "run_train_video": SimpleNamespace(best_metrics={"val_top1": 50.0}, best_epoch=1, seconds=1.0),
        "run_gen_attributes": SimpleNamespace(out=tmp_path / "a.csv", videos=4, seconds={"total": 1.0}, metrics={}),
        "run_train_attrs": SimpleNamespace(best_metrics={"val_top1": 50.0}, best_epoch=1, seconds=1.0),
        "run_eval": SimpleNamespace(metrics={"video": top1, "attrs": top1, "fused": top1}, videos=4),
        "run_predict": SimpleNamespace(predictions=[SimpleNamespace(top=[("a", 0.5)])], explain=tmp_path / "e.png"),
        "run_search": SimpleNamespace(queries=[SimpleNamespace(hits=[SimpleNamespace(video_id="v0.mp4", score=0.3)])],
                                      out=tmp_path / "hits.csv", seconds={"total": 1.0}),
    }
    for name, result in fakes.items():
        monkeypatch.setattr(demo, name, stage(name, result))
    monkeypatch.setattr(demo, "time", clock, raising=False)


def test_demo_steps_of_eval_and_predict_show_the_seconds_they_took(tmp_path, monkeypatch):
    clock = Clock()
    fake_stages(monkeypatch, tmp_path, clock, {"run_eval": 2.5, "run_predict": 0.75, "run_search": 9.0})
    summary = run_demo(DemoConfig(out=tmp_path / "demo", workers=0))
    seconds = {step.name.split(" ")[0]: step.seconds for step in summary.steps}
    assert seconds["eval"] == 2.5 and seconds["predict"] == 0.75
