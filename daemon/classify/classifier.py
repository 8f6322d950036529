"""Zero-shot CLIP classifier: label embeddings computed once, then numpy pixels to probabilities."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from daemon.classify.cpu_caps import slow_bf16_warning, this_cpu_has_native_bf16
from daemon.classify.loading import checkpoint_revision, crop_size, load_parts, normalised
from daemon.classify.precision import (
    Precision,
    PrecisionSetting,
    choose_precision,
    prepare_image_tower,
    resolve_device,
)
from daemon.decode.preprocess import spec_from_processor, to_pixels

logger = logging.getLogger(__name__)


# eq=False: a generated __eq__ would compare numpy arrays inside a tuple, which raises.
@dataclass(frozen=True, eq=False)
class Classification:
    """CLIP's verdict on one image."""

    probabilities: dict[str, float]
    target_score: float
    embedding: npt.NDArray[np.float32]


class ClipClassifier:
    """A CLIP image tower plus prompt embeddings computed once at load."""

    def __init__(
        self,
        *,
        model: Any,
        processor: Any,
        text_embeddings: torch.Tensor,
        logit_scale: float,
        model_name: str,
        model_revision: str,
        labels: tuple[str, ...],
        targets: tuple[bool, ...],
        precision: Precision,
        device: torch.device,
    ) -> None:
        self._model = model
        # Preprocessing runs in decoder processes that must not import transformers: they get
        # this picklable recipe, which reproduces the processor exactly.
        self.preprocess_spec = spec_from_processor(processor.image_processor)
        self._text_embeddings = text_embeddings
        self._logit_scale = logit_scale
        self._device = device
        self.model_name = model_name
        self.model_revision = model_revision
        self.labels = labels
        self.targets = targets
        self.precision = precision
        self.input_size = crop_size(processor)

    @classmethod
    def load(
        cls,
        name_or_path: str,
        labels: Sequence[str],
        targets: Sequence[bool],
        *,
        precision: PrecisionSetting = "fp32",
        device: str = "cpu",
    ) -> ClipClassifier:
        """Load model and processor, embed the labels, then keep only the image tower."""
        label_tuple, target_tuple = _validated_prompts(labels, targets)
        torch_device = resolve_device(device)
        chosen = choose_precision(precision, torch_device)
        _warn_if_slow(chosen, torch_device)
        parts = load_parts(name_or_path, label_tuple)
        model = prepare_image_tower(parts.vision, chosen, torch_device)
        revision = checkpoint_revision(name_or_path)
        logger.info(
            "loaded CLIP %s (revision %s, %s%s on %s, %d labels)",
            name_or_path,
            revision,
            chosen,
            " chosen by precision auto" if precision == "auto" else "",
            torch_device,
            len(label_tuple),
        )
        return cls(
            model=model,
            processor=parts.processor,
            text_embeddings=parts.text_embeddings.to(torch_device),
            logit_scale=parts.logit_scale,
            model_name=name_or_path,
            model_revision=revision,
            labels=label_tuple,
            targets=target_tuple,
            precision=chosen,
            device=torch_device,
        )

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Resize, crop and normalise one image exactly as the CLIP processor does: (3, S, S)."""
        return torch.from_numpy(to_pixels(image, self.preprocess_spec))

    def classify_tensors(self, pixel_values: torch.Tensor) -> list[Classification]:
        """Classify a preprocessed (N, 3, S, S) batch; one result per image, in order."""
        expected = (3, self.input_size, self.input_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"expected pixel values (N, {expected}), got {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[0] == 0:
            return []
        embeddings = self._image_embeddings(pixel_values)
        with torch.inference_mode():
            logits = self._logit_scale * embeddings @ self._text_embeddings.T
            probabilities = logits.softmax(dim=-1)
        return [
            self._classification(row, embedding)
            for row, embedding in zip(probabilities.cpu(), embeddings.cpu(), strict=True)
        ]

    def classify_pixels(self, pixels: Sequence[np.ndarray]) -> list[Classification]:
        """Classify decoded (3, S, S) float32 arrays: the numpy seam the worker uses."""
        if not pixels:
            return []
        return self.classify_tensors(torch.stack([torch.from_numpy(array) for array in pixels]))

    def classify(self, images: Sequence[Image.Image]) -> list[Classification]:
        """Preprocess and classify a batch of images; the caller chooses the batch size."""
        if not images:
            return []
        return self.classify_tensors(torch.stack([self.preprocess(image) for image in images]))

    def _image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image embeddings, float32, on the model's device."""
        with torch.inference_mode(), self._autocast():
            output = self._model(pixel_values=pixel_values.to(self._device))
        # image_embeds is what CLIPModel.get_image_features returns as pooler_output.
        return normalised(output.image_embeds.float())

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(device_type=self._device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _classification(
        self, probabilities: torch.Tensor, embedding: torch.Tensor
    ) -> Classification:
        values = [float(p) for p in probabilities]
        vector = embedding.numpy().astype(np.float32, copy=True)
        vector.setflags(write=False)
        return Classification(
            probabilities=dict(zip(self.labels, values, strict=True)),
            target_score=sum(p for p, target in zip(values, self.targets, strict=True) if target),
            embedding=vector,
        )


def _warn_if_slow(precision: Precision, device: torch.device) -> None:
    """An explicit bf16 copied from a faster machine must not cost throughput silently."""
    warning = slow_bf16_warning(precision, device.type, native_bf16=this_cpu_has_native_bf16())
    if warning is not None:
        logger.warning("%s", warning)


# --- prompts -----------------------------------------------------------------------------------


def _validated_prompts(
    labels: Sequence[str], targets: Sequence[bool]
) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    if not labels or len(labels) != len(targets):
        raise ValueError(
            f"need one target flag per label: {len(labels)} labels, {len(targets)} flags"
        )
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct: {list(labels)}")
    if not any(targets):
        raise ValueError("at least one label must be a target")
    return tuple(labels), tuple(bool(t) for t in targets)
