"""Decode only the frames a sampler asks for, with one batched decoder call per video.

`read` is the front (`read_frames`: checks, the backend asked for, the fallback to the other, the
`DecodeError`); one module per backend: `pyav_backend` (the default, with `pyav_fast`: only the
frames the kept ones need, bit-identical to a full decode) and `decord_backend`. `failures` names
the reasons a video fails, `frames` what both backends share (the clip they return, the output size,
the index handling); `pyav_backend.probe` reads a video's frame count, size and rate. Import from those modules:
this package re-exports nothing.
"""
