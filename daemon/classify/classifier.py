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

from daemon.classify.checkpoint import CheckpointParts, all_prompts
from daemon.classify.cpu_caps import slow_bf16_warning, this_cpu_has_native_bf16
from daemon.classify.loader_process import load_checkpoint
from daemon.classify.mapped_pages import release_mapped_pages
from daemon.classify.precision import (
    Precision,
    PrecisionSetting,
    choose_precision,
    prepare_image_tower,
    resolve_device,
    use_threads,
)
from daemon.classify.tower_weights import load_tower
from daemon.classify.weights_file import WeightsFile
from daemon.config import Config, Label
from daemon.decode.preprocess import PreprocessSpec, normalise_levels
from daemon.decode.views import View, to_views

logger = logging.getLogger(__name__)

CPU_FORWARD_VIEWS = 8  # the most views the image tower runs at once on a CPU

# What the tower is given: float pixel values (N, 3, S, S), or uint8 levels (N, S, S, 3).
ModelViews = torch.Tensor | npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ViewScore:
    """One view's label probabilities and tiger score."""

    probabilities: dict[str, float]
    target_score: float


# eq=False: a generated __eq__ would compare numpy arrays inside a tuple, which raises.
@dataclass(frozen=True, eq=False)
class Classification:
    """CLIP's verdict on one image: that of its view with the highest tiger score."""

    probabilities: dict[str, float]
    target_score: float
    embedding: npt.NDArray[np.float32]  # the chosen view's
    view: int = 0  # index of the chosen view
    views: tuple[ViewScore, ...] = ()
    infrared: bool = False  # the infrared prompts were used


class ClipClassifier:
    """A CLIP image tower plus prompt embeddings computed once at load."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        preprocess_spec: PreprocessSpec,
        input_size: int,
        text_embeddings: torch.Tensor,
        infrared_text_embeddings: torch.Tensor,
        logit_scale: float,
        model_name: str,
        model_revision: str,
        labels: tuple[str, ...],
        targets: tuple[bool, ...],
        precision: Precision,
        device: torch.device,
        view: View = "center",
    ) -> None:
        self._model = model
        # Preprocessing runs in decoder processes that must not import transformers: they get
        # this picklable recipe, which reproduces the processor exactly.
        self.preprocess_spec = preprocess_spec
        self._text_embeddings = text_embeddings
        self._infrared_text_embeddings = infrared_text_embeddings
        self.view: View = view
        self._logit_scale = logit_scale
        self._device = device
        self.model_name = model_name
        self.model_revision = model_revision
        self.labels = labels
        self.targets = targets
        self.precision = precision
        self.input_size = input_size
        self.weights: WeightsFile | None = None  # the file the tower maps, when loaded from one

    @classmethod
    def load(
        cls,
        name_or_path: str,
        labels: Sequence[str | Label],
        targets: Sequence[bool],
        *,
        precision: PrecisionSetting = "fp32",
        device: str = "cpu",
        view: View = "center",
    ) -> ClipClassifier:
        """Embed the prompts (in a child process: loader_process.py), build the image tower from
        the checkpoint's mapped weights; a text label is one prompt."""
        prompt_sets = [_one_prompt(label) if isinstance(label, str) else label for label in labels]
        label_tuple, target_tuple = _validated_prompts([p.name for p in prompt_sets], targets)
        torch_device = resolve_device(device)
        chosen = _chosen_precision(precision, torch_device)
        parts = load_checkpoint(name_or_path, all_prompts(prompt_sets))
        day, night = _label_embeddings(prompt_sets, torch.from_numpy(parts.text_embeddings))
        weights = WeightsFile.of(parts.weights_path)  # as it is when its pages are mapped
        model = _image_tower(name_or_path, parts, chosen, torch_device)
        how = f"{chosen}{' chosen by precision auto' if precision == 'auto' else ''}"
        _say_loaded(name_or_path, parts, f"{how} on {torch_device}", len(label_tuple), view)
        classifier = cls(
            model=model,
            preprocess_spec=parts.preprocess_spec,
            input_size=parts.input_size,
            text_embeddings=day.to(torch_device),
            infrared_text_embeddings=night.to(torch_device),
            logit_scale=parts.logit_scale,
            model_name=name_or_path,
            model_revision=parts.revision,
            labels=label_tuple,
            targets=target_tuple,
            precision=chosen,
            device=torch_device,
            view=view,
        )
        classifier.weights = weights
        return classifier

    @property
    def on_gpu(self) -> bool:
        return self._device.type == "cuda"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model inputs of one image for this classifier's view: (V, 3, S, S)."""
        return torch.from_numpy(to_views(image, self.preprocess_spec, self.view))

    def classify_tensors(
        self, pixel_values: torch.Tensor, infrared: Sequence[bool] | None = None
    ) -> list[Classification]:
        """Classify a preprocessed (N, 3, S, S) batch, one view per image; results in order."""
        return self.classify_views([view[np.newaxis] for view in pixel_values], infrared)

    def classify_pixels(
        self, pixels: Sequence[npt.NDArray[np.uint8]], infrared: Sequence[bool] | None = None
    ) -> list[Classification]:
        """Classify decoded images given as uint8 views (V, S, S, 3) each, as the decoders make
        them (`decode.views.to_view_levels`): normalised here, then classified by view."""
        if not pixels:
            return self.classify_views([], infrared)
        # The joined uint8 levels go to the tower, normalised a chunk at a time: a batch's
        # float32 (600 KB a view, 19 MB for 16 frames' crops) is never held whole.
        counts = [len(levels) for levels in pixels]
        return self._classify_stacked(np.concatenate(pixels), counts, infrared)

    def classify(
        self, images: Sequence[Image.Image], infrared: Sequence[bool] | None = None
    ) -> list[Classification]:
        """Preprocess and classify a batch of images; the caller chooses the batch size."""
        return self.classify_views([self.preprocess(image) for image in images], infrared)

    def classify_views(
        self, views: Sequence[torch.Tensor], infrared: Sequence[bool] | None = None
    ) -> list[Classification]:
        """Classify images given as (V, 3, S, S) views each; per image, the view with the highest
        tiger score gives the probabilities. `infrared[i]` picks image i's infrared prompts."""
        if not views:
            return self._classify_stacked(torch.empty(0), [], infrared)
        stacked = torch.cat([self._checked(view) for view in views])
        return self._classify_stacked(stacked, [len(view) for view in views], infrared)

    def _classify_stacked(
        self, stacked: ModelViews, counts: Sequence[int], infrared: Sequence[bool] | None
    ) -> list[Classification]:
        """Classify the views of len(counts) images, counts[i] of them image i's, in order."""
        lights = [False] * len(counts) if infrared is None else [bool(i) for i in infrared]
        if len(lights) != len(counts):
            raise ValueError(f"{len(counts)} images but {len(lights)} infrared flags")
        if not counts:
            return []
        if min(counts) < 1:
            raise ValueError(f"every image needs a view, got view counts {list(counts)}")
        embeddings = self._image_embeddings(stacked)
        with torch.inference_mode():
            day = (self._logit_scale * embeddings @ self._text_embeddings.T).softmax(dim=-1)
            night = (self._logit_scale * embeddings @ self._infrared_text_embeddings.T).softmax(
                dim=-1
            )
        results, start = [], 0
        for count, light in zip(counts, lights, strict=True):
            stop = start + count
            rows = (night if light else day)[start:stop].cpu()
            results.append(self._best_view(rows, embeddings[start:stop].cpu(), light))
            start = stop
        return results

    def score_embeddings(
        self, embeddings: npt.NDArray[np.float32], infrared: Sequence[bool]
    ) -> list[ViewScore]:
        """Scores of stored image embeddings (N, D) against the current prompts, per light:
        `tigerwatch rescore` decides again without decoding an image."""
        if len(embeddings) != len(infrared):
            raise ValueError(f"{len(embeddings)} embeddings but {len(infrared)} infrared flags")
        vectors = torch.from_numpy(np.asarray(embeddings, dtype=np.float32)).to(self._device)
        with torch.inference_mode():
            day = (self._logit_scale * vectors @ self._text_embeddings.T).softmax(dim=-1)
            night = (self._logit_scale * vectors @ self._infrared_text_embeddings.T).softmax(dim=-1)
        return [
            self._view_score((night if light else day)[row].cpu())
            for row, light in enumerate(infrared)
        ]

    def _checked(self, views: torch.Tensor) -> torch.Tensor:
        expected = (3, self.input_size, self.input_size)
        if views.ndim != 4 or tuple(views.shape[1:]) != expected or views.shape[0] == 0:
            raise ValueError(f"expected pixel values (V, {expected}), got {tuple(views.shape)}")
        return views

    def _image_embeddings(self, views: ModelViews) -> torch.Tensor:
        """L2-normalised projected image embeddings, float32, on the model's device."""
        # On a CPU, 8 views at a time: a lane holds the activations of 8 views (about 14 MB
        # for ViT-B/32 in fp32), not of its whole batch, at no cost in speed (measured, one
        # thread, a batch of 16 views, median of 6: fp32 1.57 s of CPU by 8 against 1.67 at
        # once, int8 0.52 against 0.55). In the daemon (2 lanes, fp32, crops, 116 frames) the
        # process's anonymous memory peaked at 319 MB against 394. A GPU takes the batch at once.
        chunk = len(views) if self.on_gpu else CPU_FORWARD_VIEWS
        with torch.inference_mode(), self._autocast():
            # CLIPVisionModelWithProjection's image_embeds: what CLIPModel.get_image_features
            # returns as pooler_output.
            embeds = torch.cat(
                [
                    self._model(self._model_input(views[start : start + chunk]))
                    for start in range(0, len(views), chunk)
                ]
            )
        return normalised(embeds.float())

    def _model_input(self, views: ModelViews) -> torch.Tensor:
        """(N, 3, S, S) float pixel values on the model's device; uint8 levels (N, S, S, 3), as
        the decoders send them, are normalised here."""
        if isinstance(views, np.ndarray):
            views = torch.from_numpy(normalise_levels(views, self.preprocess_spec))
        return self._checked(views).to(self._device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(device_type=self._device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _best_view(
        self, probabilities: torch.Tensor, embeddings: torch.Tensor, infrared: bool
    ) -> Classification:
        scores = [self._view_score(row) for row in probabilities]
        best = max(range(len(scores)), key=lambda index: scores[index].target_score)
        vector = embeddings[best].numpy().astype(np.float32, copy=True)
        vector.setflags(write=False)
        return Classification(
            probabilities=scores[best].probabilities,
            target_score=scores[best].target_score,
            embedding=vector,
            view=best,
            views=tuple(scores),
            infrared=infrared,
        )

    def _view_score(self, probabilities: torch.Tensor) -> ViewScore:
        values = [float(p) for p in probabilities]
        return ViewScore(
            probabilities=dict(zip(self.labels, values, strict=True)),
            target_score=sum(p for p, target in zip(values, self.targets, strict=True) if target),
        )


def normalised(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, p=2.0, dim=-1)


def _image_tower(
    name_or_path: str, parts: CheckpointParts, precision: Precision, device: torch.device
) -> Any:
    model = prepare_image_tower(load_tower(name_or_path, parts), precision, device)
    if precision == "int8":
        # The int8 tower reads its own packed weights: the float pages it was made from
        # (335 MiB for ViT-B/32) would stay in the daemon's RSS until memory ran short.
        released = release_mapped_pages(parts.weights_path)
        logger.debug("released %d MiB of mapped float weights", released >> 20)
    return model


def _say_loaded(name: str, parts: CheckpointParts, how: str, labels: int, view: str) -> None:
    logger.info(
        "loaded CLIP %s (revision %s, %s, %d labels, %d prompts, view %s)",
        *(name, parts.revision, how, labels, len(parts.text_embeddings), view),
    )


def _chosen_precision(setting: PrecisionSetting, device: torch.device) -> Precision:
    chosen = choose_precision(setting, device)
    _warn_if_slow(chosen, device)
    return chosen


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


def load_for_config(config: Config) -> ClipClassifier:
    """The classifier a configuration describes: the daemon's and `tigerwatch classify`'s.

    Sizes torch's threads to `model.threads` first: the commands that classify on the station
    (`classify`, `rescore`) must leave the cores the operator reserved, as the daemon does.
    """
    use_threads(config.model.threads)
    return ClipClassifier.load(
        config.model.name_or_path,
        config.labels,
        [label.target for label in config.labels],
        precision=config.model.precision,
        device=config.model.device,
        view=config.model.view,
    )


def _one_prompt(text: str) -> Label:
    return Label(name=text, prompts=(text,))


def _label_embeddings(
    labels: Sequence[Label], prompt_embeddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(day, infrared) label embeddings from the embeddings of `all_prompts(labels)`."""
    by_text = dict(zip(all_prompts(labels), prompt_embeddings, strict=True))
    return ensembled(labels, by_text, infrared=False), ensembled(labels, by_text, infrared=True)


def ensembled(
    labels: Sequence[Label], by_text: dict[str, torch.Tensor], *, infrared: bool
) -> torch.Tensor:
    """CLIP's prompt ensembling: per label, the mean of its L2-normalised prompt embeddings,
    normalised again. One row per label."""
    rows = [
        normalised(
            torch.stack([by_text[text] for text in label.prompts_for(infrared=infrared)])
        ).mean(dim=0)
        for label in labels
    ]
    return normalised(torch.stack(rows))
