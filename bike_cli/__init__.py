"""bike: BIKE (CVPR 2023) video recognition with CLIP, as a staged command-line toolkit."""

__version__ = "0.1.0"
