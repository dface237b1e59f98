"""Effect of each `--compat authors` rule against bike's default, on a synthetic example.

A generated 4-class dataset (bike_cli.data.synthetic, 96x128 videos, 32 frames, 8 videos a class)
and a random-weight authors'-layout checkpoint of bike-tiny (a 2-layer temporal transformer), so
every figure is reproducible on a CPU in about a minute. For each rule the two variants run on the
same inputs and the script prints how much they differ: frame indices that differ, mean absolute
pixel difference of the test crops, cosine of the frame embeddings, top-1 agreement and largest
score difference of the view rules, the fusion and the VCS queries, the loss values and the cosine
of their gradients, and the half-class zero-shot top-1 of the two scorers. Random weights give
meaningless accuracies: the figures say how far the rules move the numbers, not which is better.

    .venv/bin/python benchmarks/compat_effects.py --out-json compat.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from bike_cli.config.stages import ExtractConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import authors_test_indices, authors_views, segment_indices, spatial_crops
from bike_cli.data.synthetic import make_sample_dataset
from bike_cli.data.video_lists import read_video_list
from bike_cli.engine.frame_encoder import to_unit_pixels
from bike_cli.eval.authors_zero_shot import authors_zero_shot_half
from bike_cli.eval.protocols import zero_shot_half
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.models.authors import authors_kl_loss, authors_view_scores
from bike_cli.models.factory import load_video_branch
from bike_cli.models.heads import TemporalTransformer
from bike_cli.models.loss import paper_contrastive_loss, same_label_targets
from bike_cli.models.registry import get_tokenizer, register_configs
from bike_cli.models.text import encode_class_texts
from bike_cli.stages.extract import run_extraction

register_configs()


def authors_checkpoint(path: Path) -> Path:
    torch.manual_seed(123)
    clip = open_clip.create_model("bike-tiny", pretrained=None, quick_gelu=True)
    temporal = TemporalTransformer(64, layers=2, heads=1)
    with torch.no_grad():
        for name, p in temporal.named_parameters():
            p.add_(0.05 * torch.randn_like(p)) if "ln_" in name else p.normal_(0, 0.1)
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()},
                "fusion_model_state_dict": {f"module.{k}": v for k, v in temporal.state_dict().items()}}, path)
    return path


def sampling(num_frames=(32, 100, 300), frames=8, clips=(1, 4)) -> dict:
    out = {}
    for n in num_frames:
        for c in clips:
            ours = segment_indices(n, frames, mode="test", clips=c)
            theirs = authors_test_indices(n, frames, c)
            out[f"n{n}_T{frames}_C{c}"] = {"differ": float((ours != theirs).mean()),
                                         "mean_abs_offset": float(np.abs(ours - theirs).mean())}
    return out


def transform(videos: list[Path], branch, spec) -> dict:
    """Pixels and embeddings of the same frames through bike's and the authors' 3-crop transform."""
    pix, cos, size, cpu = [], [], spec.image_size, torch.device("cpu")
    for path in videos:
        full = read_frames(path, lambda n: authors_test_indices(n, 8)[0])
        small = read_frames(path, lambda n: authors_test_indices(n, 8)[0], short_side=size)
        a, b = authors_views(full.frames, size, 3), spatial_crops(small.frames, size, 3)  # [3, T, 3, s, s]
        b = b[[0, 2, 1]]  # bike: start, centre, end; authors: left, right, centre
        pix.append((a.float() - b.float()).abs().mean().item())
        with torch.no_grad():
            ea = branch.visual(to_unit_pixels(a, spec, cpu).flatten(0, 1))
            eb = branch.visual(to_unit_pixels(b, spec, cpu).flatten(0, 1))
        cos.append(F.cosine_similarity(ea, eb).mean().item())
    return {"mean_abs_pixel_difference": float(np.mean(pix)), "mean_embedding_cosine": float(np.mean(cos))}


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    return {"top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()), "max_abs_difference": float(np.abs(a - b).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_sample_dataset(root / "data", videos_per_class=8, num_frames=32, seed=1)
        ckpt = authors_checkpoint(root / "authors.pt")
        names = read_class_names(data.classes)
        videos = [e.path for e in read_video_list(data.val, class_names=names).entries]
        ab = load_video_branch(ckpt, class_names=names, model="bike-tiny", frames=8)
        results = {"sampling": sampling(), "transform": transform(videos, ab.branch, ab.spec)}
        cache = root / "val.h5"
        run_extraction(ExtractConfig(list_path=data.val, classes=data.classes, out=cache, frames=8, views="4x3",
                                     pretrained=str(ckpt), compat="authors", workers=0))
        stored = FeatureCache(cache)
        frames = torch.from_numpy(np.stack([stored.embeddings(i) for i in range(len(stored))]).astype(np.float32))
        labels = stored.labels
        tok = get_tokenizer("bike-tiny")
        texts = {v: encode_class_texts(ab.clip, tok, names, ab.branch_spec.templates, v) for v in ("all", "words")}
        b, v = frames.shape[:2]
        with torch.no_grad():
            logits = {k: ab.branch.head(frames.flatten(0, 1), t).view(b, v, -1) for k, t in texts.items()}
            scale = ab.branch.logit_scale().exp()
        bike_rule = (logits["all"] * scale).softmax(-1).mean(1).numpy()
        authors_rule = authors_view_scores(logits["all"]).numpy()
        results["view_rule"] = agreement(bike_rule, authors_rule)
        results["vcs_tokens_all_vs_words"] = agreement(authors_view_scores(logits["words"]).numpy(), authors_rule)
        attrs = torch.rand(b, len(names)).softmax(-1).numpy()  # stand-in attribute scores
        results["fusion_0.7_vs_0.6"] = agreement(0.6 * bike_rule + 0.4 * attrs, 0.7 * authors_rule + 0.3 * attrs)
        results["loss"] = loss_effect()
        results["attributes_head_input"] = attrs_head_effect(ab.clip, tok, names)
        ours = zero_shot_half(bike_rule, labels)
        theirs = authors_zero_shot_half(frames.flatten(1, 2), texts["all"].pooled, labels)
        results["zero_shot_half_top1_mean"] = {"bike": ours["top1_mean"], "authors": theirs["top1_mean"]}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out_json:
        args.out_json.write_text(text + "\n")


def attrs_head_effect(clip, tok, names) -> dict:
    """Logits of a `--tune head` branch (weights N(0, 0.02), biases N(0, 0.02)) on the raw vs the
    L2-normalised sentence embedding, for sentences encoded by the checkpoint's text tower."""
    from bike_cli.models.attrs_branch import AttributesBranch
    from bike_cli.models.loss import LogitScale

    torch.manual_seed(0)
    branch = AttributesBranch("head", 64, LogitScale())
    with torch.no_grad():
        for name, p in branch.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
        sentences = [f"This is a video about {a},{b}" for a in names for b in names]
        emb = clip.encode_text(tok(sentences)).float()  # [R, D], raw
        classes = F.normalize(clip.encode_text(tok([f"This is a video about {c}" for c in names])).float(), dim=-1)
        fixed = branch.logits(branch.encode_attributes(emb), classes)
        raw = branch.logits(branch.sentence_fc(emb), classes)
    return {"sentence_norm_mean": emb.norm(dim=-1).mean().item(),
            "median_relative_logit_difference": ((fixed - raw).abs() / raw.abs().clamp(min=1e-6)).median().item(),
            "top1_agreement": (fixed.argmax(1) == raw.argmax(1)).float().mean().item()}


def loss_effect() -> dict:
    torch.manual_seed(0)
    labels = torch.randint(0, 8, (64,))
    targets = same_label_targets(labels)
    logits = (torch.rand(64, 64) * 2 - 1).requires_grad_()
    scale = torch.tensor(math.log(100.0))
    ours = paper_contrastive_loss(logits, targets, scale)
    theirs = authors_kl_loss(logits, targets, scale)
    g_ours, = torch.autograd.grad(ours, logits)
    g_theirs, = torch.autograd.grad(theirs, logits)
    return {"eq7": ours.item(), "authors_kl": theirs.item(),
            "gradient_cosine": F.cosine_similarity(g_ours.flatten(), g_theirs.flatten(), dim=0).item()}


if __name__ == "__main__":
    main()
