"""An authors'-layout checkpoint (random weights, `module.` prefix) through `bike eval` and `bike predict`.

The reference is the authors' pipeline written out in this file from the formulas of their released
code (test.py, datasets/video.py, datasets/transforms.py, modules/video_clip.py): their test frame
indices, PIL bicubic resize + centre crop / three full-resolution crops, the temporal transformer
(seq-first attention written out by hand, TF-style LayerNorm, QuickGELU), VCS over all 77 token
positions, and the view rule softmax -> mean -> softmax. CLIP's own towers are open_clip's (the same
architecture as OpenAI's, loaded with a plain `load_state_dict`).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import decord
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as TV
from PIL import Image

from bike_cli.data.class_names import read_class_names
from bike_cli.data.video_lists import read_video_list
from bike_cli.eval.authors_zero_shot import authors_zero_shot_half
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import read_score_csv
from bike_cli.models.heads import TemporalTransformer
from bike_cli.models.registry import register_configs

register_configs()  # bike-tiny, the random-weight test architecture

BIKE = [sys.executable, "-m", "bike_cli"]
MEAN = (0.48145466, 0.4578275, 0.40821073)  # the authors hard-code OpenAI's
STD = (0.26862954, 0.26130258, 0.27577711)
LAYERS, FRAMES, SIZE = 2, 4, 64


def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*BIKE, *map(str, args)], capture_output=True, text=True, timeout=240)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def authors_ckpt(tmp_path_factory):
    """A checkpoint in the authors' layout: DDP `module.` prefixes, epoch and optimiser entries."""
    root = tmp_path_factory.mktemp("authors")
    torch.manual_seed(123)
    clip = open_clip.create_model("bike-tiny", pretrained=None, quick_gelu=True)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(42.0))
    temporal = TemporalTransformer(64, layers=LAYERS, heads=1)
    with torch.no_grad():  # non-trivial biases and norms, not the zero / one init
        for name, p in temporal.named_parameters():
            p.add_(0.05 * torch.randn_like(p)) if "ln_" in name else p.normal_(0, 0.1)
    path = root / "k400-tiny-f4.pt"
    torch.save({"epoch": 3,
                "model_state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()},
                "fusion_model_state_dict": {f"module.{k}": v for k, v in temporal.state_dict().items()},
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 5e-6, "betas": (0.9, 0.999),
                                                                         "params": [0, 1]}]}}, path)
    return path


@pytest.mark.parametrize("head", [None, "mean"])
def test_an_authors_checkpoint_loads_its_temporal_weights(authors_ckpt, head):
    """eval and predict rebuild the branch with `load_video_branch`: its temporal transformer is the
    file's `fusion_model_state_dict`, not a fresh initialisation."""
    from bike_cli.models.factory import load_video_branch

    saved = torch.load(authors_ckpt, weights_only=True)["fusion_model_state_dict"]
    built = load_video_branch(authors_ckpt, class_names=["a", "b"], model="bike-tiny", frames=FRAMES, head=head)
    own = built.branch.head.temporal.state_dict()
    assert set(own) == {k.removeprefix("module.") for k in saved}
    for name, value in own.items():
        assert torch.equal(value, saved[f"module.{name}"]), name
    clip = torch.load(authors_ckpt, weights_only=True)["model_state_dict"]
    assert torch.equal(built.clip.logit_scale.detach(), clip["module.logit_scale"])


def test_init_from_an_authors_checkpoint_takes_its_temporal_weights(authors_ckpt):
    from bike_cli.io.checkpoints import authors_branch_state, read_authors_checkpoint

    state = authors_branch_state(read_authors_checkpoint(authors_ckpt))
    saved = torch.load(authors_ckpt, weights_only=True)["fusion_model_state_dict"]
    for name, value in saved.items():
        assert torch.equal(state[f"head.temporal.{name.removeprefix('module.')}"], value), name


# ----------------------------------------------------------------------------- the reference


def _ref_indices(n: int, t: int, clips: int) -> list[int]:
    tick = n / t
    starts = np.linspace(0, tick - 1, num=clips).astype(int)
    return [int(s + tick * x) % n for s in starts for x in range(t)]


def _ref_crops(img: Image.Image, crops: int) -> list[Image.Image]:
    scaled = TV.Resize(256 if SIZE == 224 else SIZE, TV.InterpolationMode.BICUBIC)(img)
    if crops == 1:
        return [TV.CenterCrop(SIZE)(scaled)]
    w, h = scaled.size
    ws, hs = (w - SIZE) // 4, (h - SIZE) // 4
    return [scaled.crop((x, 2 * hs, x + SIZE, 2 * hs + SIZE)) for x in (0, 4 * ws, 2 * ws)]


def _ref_pixels(path, clips: int, crops: int) -> torch.Tensor:
    """[V, T, 3, S, S] normalised pixels, views in the authors' order (crop-major)."""
    vr = decord.VideoReader(str(path))
    images = [Image.fromarray(vr[i].asnumpy()).convert("RGB") for i in _ref_indices(len(vr), FRAMES, clips)]
    per_crop = list(zip(*[_ref_crops(img, crops) for img in images]))  # [S][C*T]
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    tensors = [(TV.functional.to_tensor(im) - mean) / std for group in per_crop for im in group]
    return torch.stack(tensors).view(clips * crops, FRAMES, 3, SIZE, SIZE)


def _ln(x, state, p):
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    return state[p + ".weight"] * (x - u) / torch.sqrt(s + 1e-12) + state[p + ".bias"]


def _attention(x, state, p, heads):  # x [L, N, E], seq-first as their nn.MultiheadAttention
    length, n, e = x.shape
    q, k, v = (x @ state[p + ".in_proj_weight"].T + state[p + ".in_proj_bias"]).chunk(3, -1)
    split = lambda y: y.reshape(length, n * heads, e // heads).transpose(0, 1)  # noqa: E731
    att = (split(q) @ split(k).transpose(1, 2) / math.sqrt(e // heads)).softmax(-1)
    out = (att @ split(v)).transpose(0, 1).reshape(length, n, e)
    return out @ state[p + ".out_proj.weight"].T + state[p + ".out_proj.bias"]


def _ref_temporal(x, state):  # x [B, T, D] -> [B, T, D]
    h = (x + state["frame_position_embeddings.weight"][: x.shape[1]]).permute(1, 0, 2)
    for i in range(LAYERS):
        p = f"transformer.resblocks.{i}"
        h = h + _attention(_ln(h, state, p + ".ln_1"), state, p + ".attn", heads=1)
        m = _ln(h, state, p + ".ln_2") @ state[p + ".mlp.c_fc.weight"].T + state[p + ".mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)
        h = h + m @ state[p + ".mlp.c_proj.weight"].T + state[p + ".mlp.c_proj.bias"]
    return h.permute(1, 0, 2) + x


def _ref_vcs(vid, tokens, cls):  # vid [B, T, D], tokens [K, 77, D], cls [K, D] -> [B, K]
    vid, tokens, cls = (F.normalize(t, dim=-1) for t in (vid, tokens, cls))
    att = (torch.einsum("awd,btd->abwt", tokens, vid) / 0.01).softmax(-1).mean(-2)  # [K, B, T]
    return torch.einsum("abd,ad->ab", torch.einsum("abt,btd->abd", att, vid), cls).T


@torch.no_grad()
def _authors_model(ckpt, class_names):
    """(CLIP, temporal state, class tokens [K, 77, D], class embeddings [K, D]) of an authors' checkpoint."""
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    strip = lambda sd: {k.replace("module.", ""): v for k, v in sd.items()}  # noqa: E731
    clip = open_clip.create_model("bike-tiny", pretrained=None, quick_gelu=True)
    clip.load_state_dict(strip(data["model_state_dict"]))
    clip.eval()
    text = open_clip.get_tokenizer("bike-tiny")([f"This is a video about {c}" for c in class_names])
    x = clip.transformer(clip.token_embedding(text) + clip.positional_embedding, attn_mask=clip.attn_mask)
    tokens = clip.ln_final(x) @ clip.text_projection  # [K, 77, D]
    return clip, strip(data["fusion_model_state_dict"]), tokens, tokens[torch.arange(len(text)), text.argmax(-1)]


@torch.no_grad()
def authors_reference(ckpt, videos, class_names, clips, crops):
    """(frame embeddings [N, V, T, D], scores [N, K], class embeddings [K, D]) as the authors' test.py."""
    clip, fusion, tokens, cls = _authors_model(ckpt, class_names)
    frames, scores = [], []
    for path in videos:
        emb = clip.encode_image(_ref_pixels(path, clips, crops).flatten(0, 1)).view(clips * crops, FRAMES, -1)
        sim = _ref_vcs(_ref_temporal(emb, fusion), tokens, cls)  # [V, K]
        frames.append(emb)
        scores.append(sim.softmax(-1).mean(0).softmax(-1))
    return torch.stack(frames).numpy(), torch.stack(scores).numpy(), cls.numpy()


# ----------------------------------------------------------------------------- the checks


def test_bike_eval_compat_authors_reproduces_the_authors_pipeline(tmp_path, sample_data, authors_ckpt):
    names = read_class_names(sample_data.classes)
    videos = [e.path for e in read_video_list(sample_data.val, class_names=names).entries]
    ref_frames, ref_scores, ref_classes = authors_reference(authors_ckpt, videos, names, clips=2, crops=3)
    # from the videos, decoded and transformed by bike
    _run("eval", "--checkpoint", authors_ckpt, "--model", "bike-tiny", "--frames", FRAMES, "--videos",
         sample_data.val, "--classes", sample_data.classes, "--views", "2x3", "--compat", "authors",
         "--workers", "0", "--out", tmp_path / "videos")
    scored = read_score_csv(tmp_path / "videos" / "video_scores.csv")
    np.testing.assert_allclose(scored.scores, ref_scores, rtol=1e-5, atol=1e-6)
    meta = json.loads((tmp_path / "videos" / "video_scores.csv.meta.json").read_text())
    assert meta["compat"] == "authors"
    # from a cache extracted with the checkpoint's own visual weights (fp16 storage)
    cache = tmp_path / "val.h5"
    _run("extract-features", "--list", sample_data.val, "--classes", sample_data.classes, "--model", "bike-tiny",
         "--pretrained", authors_ckpt, "--frames", FRAMES, "--views", "2x3", "--compat", "authors",
         "--workers", "0", "--out", cache)
    stored = FeatureCache(cache)
    assert stored.meta.compat == "authors" and stored.meta.quick_gelu
    cached = np.stack([stored.embeddings(i) for i in range(len(stored))]).astype(np.float32)  # v = c * 3 + s
    n, _, t, d = ref_frames.shape
    clip_major = ref_frames.reshape(n, 3, 2, t, d).transpose(0, 2, 1, 3, 4).reshape(n, 6, t, d)  # from s * 2 + c
    np.testing.assert_allclose(cached, clip_major, rtol=2e-3, atol=2e-3)  # fp16 storage
    _run("eval", "--checkpoint", authors_ckpt, "--features", cache, "--compat", "authors", "--workers", "0",
         "--out", tmp_path / "cache", "--protocol", "zero-shot-half")
    from_cache = read_score_csv(tmp_path / "cache" / "video_scores.csv")
    np.testing.assert_allclose(from_cache.scores, ref_scores, atol=2e-4)
    assert (from_cache.scores.argmax(1) == ref_scores.argmax(1)).all()
    # test_zeroshot.py's half-classes scorer on the raw frame embeddings (checked in test_authors_rules)
    zero_shot = json.loads((tmp_path / "cache" / "metrics.json").read_text())["metrics"]["video"]
    labels = read_score_csv(tmp_path / "videos" / "video_scores.csv").labels
    reference = authors_zero_shot_half(torch.from_numpy(ref_frames).flatten(1, 2), torch.from_numpy(ref_classes),
                                       labels)
    assert zero_shot["scorer"] == "authors"
    for key in ("full_top1", "top1_mean", "top1_std", "top5_mean"):
        assert zero_shot[key] == pytest.approx(reference[key], abs=1e-6)


def test_a_cache_of_other_visual_weights_is_refused_naming_both_digests(tmp_path, sample_data, authors_ckpt):
    cache = tmp_path / "plain.h5"
    _run("extract-features", "--list", sample_data.val, "--classes", sample_data.classes, "--model", "bike-tiny", "--frames", FRAMES,
         "--compat", "authors", "--workers", "0", "--out", cache)
    refused = _run("eval", "--checkpoint", authors_ckpt, "--features", cache, "--compat", "authors",
                   "--workers", "0", "--out", tmp_path / "no", ok=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    message = " ".join(refused.stderr.split())
    assert FeatureCache(cache).meta.visual_sha256 in message
    assert "--pretrained" in message and "--ignore-visual-weights" in message
    assert not (tmp_path / "no" / "video_scores.csv").exists()
    _run("eval", "--checkpoint", authors_ckpt, "--features", cache, "--compat", "authors", "--workers", "0",
         "--ignore-visual-weights", "--out", tmp_path / "yes")
    assert (tmp_path / "yes" / "video_scores.csv").exists()


def test_missing_architecture_of_an_authors_checkpoint_is_named(tmp_path, sample_data, authors_ckpt):
    result = _run("eval", "--checkpoint", authors_ckpt, "--videos", sample_data.val, "--classes",
                  sample_data.classes, "--frames", FRAMES, "--workers", "0", "--out", tmp_path, ok=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--model" in result.stderr


def test_bike_predict_reads_an_authors_checkpoint(tmp_path, sample_data, authors_ckpt):
    names = read_class_names(sample_data.classes)
    video = read_video_list(sample_data.val, class_names=names).entries[0].path
    _, ref_scores, _ = authors_reference(authors_ckpt, [video], names, clips=1, crops=1)
    result = _run("predict", video, "--checkpoint", authors_ckpt, "--model", "bike-tiny", "--frames", FRAMES,
                  "--classes", sample_data.classes, "--compat", "authors", "--lexicon", "none", "--json")
    document = json.loads(result.stdout)
    top = document["videos"][0]["top5"]
    order = np.argsort(-ref_scores[0])[: len(top)]
    assert [t["class"] for t in top] == [names[i] for i in order]
    np.testing.assert_allclose([t["prob"] for t in top], ref_scores[0][order], rtol=1e-5)
    assert document["model"]["vcs_tokens"] == "all" and document["model"]["temporal"] == "transformer"


def test_attributes_under_the_authors_profile_are_fused_0_7_0_3(tmp_path, sample_data, authors_ckpt):
    from bike_cli.config.stages import EvalConfig, ExtractConfig, GenAttributesConfig
    from bike_cli.io.csv_meta import read_csv_meta
    from bike_cli.stages.evaluate import run_eval
    from bike_cli.stages.extract import run_extraction
    from bike_cli.stages.gen_attributes import run_gen_attributes

    cache = tmp_path / "val.h5"
    run_extraction(ExtractConfig(list_path=sample_data.val, classes=sample_data.classes, out=cache, frames=FRAMES,
                                 pretrained=str(authors_ckpt), compat="authors", workers=0))
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("red square\nblue circle\nmoving left\nmoving right\n")
    attrs = tmp_path / "attrs.csv"
    run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=attrs, top_k=2))
    assert read_csv_meta(attrs).compat == "authors"
    summary = run_eval(EvalConfig(out=tmp_path / "eval", checkpoint=authors_ckpt, features=cache, attributes=attrs,
                                  compat="authors", workers=0))
    video, fused = (read_score_csv(summary.files[k]).scores for k in ("video", "fused"))
    attributes = read_score_csv(summary.files["attrs"]).scores
    np.testing.assert_allclose(fused, 0.7 * video + 0.3 * attributes, atol=1e-6)
    # the zero-training attributes branch: softmax of the unscaled cosine to the class prompts
    clip = open_clip.create_model("bike-tiny", pretrained=None, quick_gelu=True)
    data = torch.load(authors_ckpt, map_location="cpu", weights_only=True)
    clip.load_state_dict({k.replace("module.", ""): v for k, v in data["model_state_dict"].items()})
    tok = open_clip.get_tokenizer("bike-tiny")
    names = read_class_names(sample_data.classes)
    with torch.no_grad():
        sentences = F.normalize(clip.encode_text(tok(_sentences(attrs))), dim=-1)
        classes = F.normalize(clip.encode_text(tok([f"This is a video about {c}" for c in names])), dim=-1)
    np.testing.assert_allclose(attributes, (sentences @ classes.T).softmax(-1).numpy(), atol=1e-5)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["fuse"] == 0.7


def _sentences(path) -> list[str]:
    import csv

    with open(path, newline="") as fh:
        return [row["sentence"] for row in csv.DictReader(fh)]


@torch.no_grad()
def _fusion_acc_inputs(ckpt, videos, class_names, clips):
    """(per-view cosine logits [N, V, K] of the authors' pipeline, unscaled as their video_head's; CLIP)."""
    clip, fusion, tokens, cls = _authors_model(ckpt, class_names)
    sims = []
    for path in videos:
        emb = clip.encode_image(_ref_pixels(path, clips, 1).flatten(0, 1)).view(clips, FRAMES, -1)
        sims.append(_ref_vcs(_ref_temporal(emb, fusion), tokens, cls))  # [V, K]
    return torch.stack(sims), clip


def test_fused_scores_under_the_authors_profile_equal_their_fusion_acc(tmp_path, sample_data, authors_ckpt):
    """utils.fusion_acc: 0.7 x validate()'s scores (softmax per view, view mean) + 0.3 x the sentences'."""
    names = read_class_names(sample_data.classes) + [f"unrelated class {i}" for i in range(396)]
    classes = tmp_path / "classes400.txt"
    classes.write_text("".join(f"{name}\n" for name in names))
    videos = [e.path for e in read_video_list(sample_data.val, class_names=names).entries]
    cache = tmp_path / "val.h5"
    _run("extract-features", "--list", sample_data.val, "--classes", classes, "--model", "bike-tiny",
         "--pretrained", authors_ckpt, "--frames", FRAMES, "--views", "2x1", "--compat", "authors",
         "--workers", "0", "--out", cache)
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("red square\nblue circle\nmoving left\nmoving right\nstanding still\n")
    attrs = tmp_path / "attrs.csv"
    _run("gen-attributes", "--features", cache, "--lexicon", lexicon, "--top-k", "2", "--out", attrs)
    _run("eval", "--checkpoint", authors_ckpt, "--model", "bike-tiny", "--frames", FRAMES, "--videos",
         sample_data.val, "--classes", classes, "--views", "2x1", "--compat", "authors", "--workers", "0",
         "--attributes", attrs, "--out", tmp_path / "eval")
    # the reference: their per-view logits, their validate() rule, their sentence rule, 0.7 / 0.3
    sims, clip = _fusion_acc_inputs(authors_ckpt, videos, names, clips=2)  # [N, V, K]
    video_sims = sims.softmax(-1).mean(1)  # validate(): no second softmax
    tok = open_clip.get_tokenizer("bike-tiny")
    rows = {}
    with torch.no_grad():
        prompts = F.normalize(clip.encode_text(tok([f"This is a video about {c}" for c in names])), dim=-1)
        import csv

        with open(attrs, newline="") as fh:
            for row in csv.DictReader(fh):
                emb = F.normalize(clip.encode_text(tok([row["sentence"]])), dim=-1)
                rows.setdefault(row["video_id"], []).append((emb @ prompts.T).softmax(-1)[0])
    ids = read_score_csv(tmp_path / "eval" / "video_scores.csv").video_ids
    sentence_sims = torch.stack([torch.stack(rows[v]).mean(0) for v in ids])
    reference = (0.7 * video_sims + 0.3 * sentence_sims).numpy()
    fused = read_score_csv(tmp_path / "eval" / "fused_scores.csv")
    np.testing.assert_allclose(fused.scores, reference, rtol=1e-5, atol=1e-9)
    # the test.py double softmax would give other fused scores on these 400 classes
    double = (0.7 * sims.softmax(-1).mean(1).softmax(-1) + 0.3 * sentence_sims).numpy()
    assert np.abs(double - reference).max() > 100 * 1e-5 * np.abs(reference).max()
    # bike fuse of eval's two files gives the same; the sidecar names the rule
    meta = json.loads((tmp_path / "eval" / "video_scores.csv.meta.json").read_text())
    assert meta["scores"] == "authors-validate"
    _run("fuse", tmp_path / "eval" / "video_scores.csv", tmp_path / "eval" / "attrs_scores.csv", "--compat",
         "authors", "--out", tmp_path / "fused.csv")
    np.testing.assert_allclose(read_score_csv(tmp_path / "fused.csv").scores, reference, rtol=1e-5, atol=1e-9)


def test_fuse_under_the_authors_profile_refuses_test_py_double_softmax_scores(tmp_path, sample_data, authors_ckpt):
    _run("eval", "--checkpoint", authors_ckpt, "--model", "bike-tiny", "--frames", FRAMES, "--videos",
         sample_data.val, "--classes", sample_data.classes, "--compat", "authors", "--workers", "0",
         "--out", tmp_path / "video")
    video = tmp_path / "video" / "video_scores.csv"
    assert json.loads((tmp_path / "video" / "video_scores.csv.meta.json").read_text())["scores"] == "authors-test"
    refused = _run("fuse", video, video, "--compat", "authors", "--out", tmp_path / "fused.csv", ok=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    message = "".join(refused.stderr.split())  # Rich folds long lines, even inside a path
    assert str(video) in message and "fusion_acc" in message and "--attributes" in message
    assert not (tmp_path / "fused.csv").exists()
