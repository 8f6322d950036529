"""CLIP ViT-B/32's preprocessing as its image processor configures it, for decoder tests.

A module of its own: decoder tests must not import tests.daemon_support, which loads the
model code into the process the decoder children start from."""

from __future__ import annotations

from daemon.decode.preprocess import PreprocessSpec

CLIP_SPEC = PreprocessSpec(
    size=224,
    crop=224,
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
    resample=3,
    rescale_factor=1 / 255,
)
