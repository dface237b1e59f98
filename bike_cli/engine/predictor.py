"""A loaded Video branch run on single videos: classes, temporal saliency and attributes (`bike predict`).

For every video: T frames by the profile's test sampling (one centre crop: the 1x1 view), encoded by
the branch's image tower (`engine.frame_encoder.FrameEncoder`, as extract and eval encode them); class
probabilities by the profile's video score rule; the temporal saliency of the predicted class (Eq. 5
on the temporally encoded frames with the class's VCS query tokens; uniform 1/T for the mean head,
which weighs every frame alike); and the video's attributes, the top-k lexicon phrases by cosine with
the L2-normalised mean of the frame embeddings (Sec. 2.2), joined into the attribute sentence. The
model is a `models.factory.VideoClassifier`; the profile (`config.profile.Profile`) comes from the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bike_cli.config.profile import Profile
from bike_cli.config.stages import DEFAULT_DECODER
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import TEST_INDICES
from bike_cli.data.views import TEST_TRANSFORMS
from bike_cli.engine.evaluation import VIDEO_SCORES
from bike_cli.engine.frame_encoder import FrameEncoder
from bike_cli.errors import InputError
from bike_cli.models.factory import VideoClassifier
from bike_cli.models.heads import vcs_saliency
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.retrieval import encode_texts, topk_cosine
from bike_cli.models.text import attribute_sentence


@dataclass
class EncodedVideo:
    """One video's sampled frames and their CLIP embeddings."""

    frame_indices: list[int]  # T indices into the video's frames
    num_frames: int  # frames in the video, as the decoder counted them
    pixels: torch.Tensor  # uint8 [T, 3, S, S], the centre crops the model saw
    embeddings: torch.Tensor  # float32 [T, D], not normalised (as in a feature cache)


@dataclass
class VideoPrediction:
    """What `predict` reports for one video."""

    video: Path
    top: list[tuple[str, float]]  # (class name, probability), best first
    probabilities: np.ndarray  # float32 [K], sums to 1
    saliency: list[float]  # [T] temporal saliency of the predicted class, sums to 1
    saliency_method: str  # "vcs" or "uniform" (mean head)
    frame_indices: list[int]  # [T]
    attributes: list[str]  # top-k lexicon phrases, best first ([] without a lexicon)
    attribute_scores: list[float]  # their cosine similarities
    sentence: str | None  # the attribute sentence (None without a lexicon)
    thumbnails: np.ndarray  # uint8 [T, S, S, 3], for the explanation figure

    @property
    def predicted(self) -> str:
        return self.top[0][0]

    def to_json(self) -> dict:
        """The JSON record of `bike predict --json` (no thumbnails)."""
        return {
            "video": str(self.video),
            "top5": [{"class": name, "prob": prob} for name, prob in self.top],
            "attributes": self.attributes,
            "attribute_scores": self.attribute_scores,
            "sentence": self.sentence,
            "saliency": self.saliency,
            "saliency_method": self.saliency_method,
            "frame_indices": self.frame_indices,
        }



class Predictor:
    """A loaded Video branch (with CLIP's image tower) run by a profile's rules, and the lexicon's phrases."""

    def __init__(self, model: VideoClassifier, profile: Profile, compat: str, device: torch.device) -> None:
        self.model, self.profile, self.compat, self.device = model, profile, compat, device
        self.branch, self.spec, self.frames = model.branch, model.spec, model.frames
        self.class_names, self.class_texts = model.names, model.texts
        self.description = {**model.description, "compat": compat}
        self.rule = VIDEO_SCORES[profile.video_score_rule(fusing=False)]
        self.phrases: list[str] = []
        self.phrase_emb: torch.Tensor | None = None  # [P, D] normalised
        self.encoder = FrameEncoder(self.branch, self.spec, device)  # the branch's image tower, precision auto

    def set_lexicon(self, phrases: list[str], batch_size: int = 256) -> None:
        """Encode the lexicon's phrases (bare, as in the paper) with the model's CLIP text encoder."""
        self.phrases = list(phrases)
        tokenizer = get_tokenizer(self.spec.model_name)
        self.phrase_emb = encode_texts(self.model.clip, tokenizer, self.phrases, batch_size)  # [P, D]

    def encode_video(self, path: Path, decoder: str = DEFAULT_DECODER) -> EncodedVideo:
        """Decode T test-sampled frames (centre crop) and embed them; DecodeError names the file."""
        size, transform = self.spec.image_size, TEST_TRANSFORMS[self.profile.test_transform]
        def indices(n: int) -> np.ndarray:  # [T]: one test clip by the profile's rule
            return TEST_INDICES[self.profile.test_indices](n, self.frames, 1)[0]
        clip = read_frames(path, indices, short_side=None if transform.full_size else size, decoder=decoder,
                           resize=self.spec.resize_mode)
        pixels = transform.views(clip.frames, size, 1, self.spec.resize_mode)[0]  # [T, 3, S, S]
        emb = self.encoder.embed(pixels)  # [T, D]
        return EncodedVideo(np.asarray(indices(clip.num_frames)).tolist(), clip.num_frames, pixels, emb)

    @torch.no_grad()
    def predict(self, path: Path, top: int = 5, top_k: int = 5, decoder: str = DEFAULT_DECODER) -> VideoPrediction:
        """Classes, saliency and attributes of one video."""
        video = self.encode_video(path, decoder)
        frames = video.embeddings.unsqueeze(0)  # [1, T, D]
        probs = self.model.scores(frames.unsqueeze(1), self.rule)[0].cpu()  # [K]
        order = probs.argsort(descending=True)[:top].tolist()
        saliency, method = self.saliency(frames, order[0])
        attributes, scores = self.attributes(video.embeddings, top_k)
        return VideoPrediction(
            video=path, top=[(self.class_names[i], float(probs[i])) for i in order],
            probabilities=probs.numpy(), saliency=saliency, saliency_method=method,
            frame_indices=video.frame_indices, attributes=attributes, attribute_scores=scores,
            sentence=attribute_sentence(attributes) if attributes else None,
            thumbnails=video.pixels.permute(0, 2, 3, 1).cpu().numpy(),
        )

    def saliency(self, frames: torch.Tensor, class_index: int) -> tuple[list[float], str]:
        """Temporal saliency [T] of one class for frames [1, T, D], and how it was made."""
        head = self.branch.head
        if head.head != "vcs":
            steps = frames.shape[1]
            return [1.0 / steps] * steps, "uniform"
        rows = slice(class_index, class_index + 1)
        texts = self.class_texts
        weights = texts.token_mask if texts.token_weights is None else texts.token_weights  # [K, M]
        s = vcs_saliency(head.encode(frames), texts.tokens[rows], weights[rows], head.tau)  # [1, 1, T]
        return s[0, 0].cpu().tolist(), "vcs"

    def attributes(self, embeddings: torch.Tensor, k: int) -> tuple[list[str], list[float]]:
        """Top-k phrases for frame embeddings [T, D] (mean over T, normalised), with their cosines."""
        if self.phrase_emb is None:
            return [], []
        if k > len(self.phrases):
            raise InputError(f"--top-k {k} is more than the {len(self.phrases)} phrases of the lexicon")
        video = F.normalize(embeddings.mean(0, keepdim=True), dim=-1)  # [1, D]
        values, indices = topk_cosine(video, self.phrase_emb.to(video.device), k)  # [1, k]
        return [self.phrases[i] for i in indices[0].tolist()], values[0].cpu().tolist()
