"""CLIP model loading (open_clip architectures, pretrained tags, local checkpoints)."""
