"""(a) The original notebook's way: full decode, the whole CLIPModel, one image at a time."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from bench.harness import Rate
from bench.inputs import NOTEBOOK_PROMPTS, BenchFile


def _notebook_one(model: Any, processor: Any, path: Path) -> None:
    image = Image.open(path).convert("RGB")
    inputs = processor(text=list(NOTEBOOK_PROMPTS), images=image, return_tensors="pt", padding=True)
    with torch.no_grad():
        outputs = model(**inputs)
    outputs.logits_per_image.softmax(dim=1)


def measure_notebook(model_dir: Path, files: Sequence[BenchFile]) -> Rate:
    """Full decode, processor on text and image, the whole CLIPModel, one image at a time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CLIPModel.from_pretrained(model_dir).eval()  # type: ignore[no-untyped-call]
        processor = CLIPProcessor.from_pretrained(model_dir)
    _notebook_one(model, processor, files[0].path)  # warm-up, not timed
    started = time.perf_counter()
    for file in files:
        _notebook_one(model, processor, file.path)
    return Rate(len(files), time.perf_counter() - started)
