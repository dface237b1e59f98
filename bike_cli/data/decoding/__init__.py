"""Decode only the frames a sampler asks for: `read.read_frames` is the front, one module per backend
(`pyav_backend`, the default, and `decord_backend`), `frames` what they share. No re-exports."""
