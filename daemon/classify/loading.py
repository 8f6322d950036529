"""Read a CLIP checkpoint with transformers (in the loader child): prompts, processor, config."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import huggingface_hub
import torch
from huggingface_hub.utils import logging as hub_logging
from safetensors import safe_open
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    CLIPTextModelWithProjection,
)
from transformers.utils import logging as transformers_logging
from transformers.utils.hub import cached_file

from daemon.classify.checkpoint import CheckpointParts, TowerShape
from daemon.classify.classifier import normalised
from daemon.classify.errors import ModelLoadError
from daemon.classify.hub_probe import hub_unreachable_reason
from daemon.classify.model_files import weights_digest
from daemon.classify.model_source import fetch_hint, is_hub_name, short_reason
from daemon.decode.preprocess import spec_from_processor

__all__ = ["ModelLoadError", "download_model", "load_parts"]

logger = logging.getLogger(__name__)

# The checkpoint files the image tower's weights and logit_scale are read from, in this order.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_parts(name_or_path: str, labels: tuple[str, ...]) -> CheckpointParts:
    """Everything classification needs from a checkpoint but the image tower's weights, read
    quietly and checked: the labels' embeddings, the preprocessing and the tower's recipe."""
    # Telemetry would also fetch the hub's agent registry before any request (a 3 s wait on an
    # offline station, and traffic on a metered link): a station sends none.
    huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True
    with _progress_bars_disabled():
        read = _load_model_and_processor(name_or_path, labels)
    processor, vision_config = read.processor, read.vision_config
    _check_input_size(name_or_path, int(vision_config.image_size), processor)
    try:
        spec = spec_from_processor(processor.image_processor)
    except ValueError as err:
        raise ModelLoadError(f"Cannot load CLIP model {name_or_path!r}: {err}") from err
    return CheckpointParts(
        text_embeddings=read.text_embeddings.numpy(),
        logit_scale=read.logit_scale,
        preprocess_spec=spec,
        input_size=crop_size(processor),
        tower=TowerShape.from_config(vision_config.to_dict()),
        weights_path=read.weights_path,
        revision=checkpoint_revision(name_or_path),
    )


class _Read(NamedTuple):
    """What transformers read from a checkpoint."""

    processor: Any  # CLIPProcessor
    vision_config: Any  # CLIPVisionConfig, with the top-level projection_dim
    text_embeddings: torch.Tensor
    weights_path: str
    logit_scale: float


def download_model(name: str, out_dir: Path) -> None:
    """On a connected machine: fetch model and processor from the hub and save them to out_dir."""
    try:
        model = CLIPModel.from_pretrained(name)
        processor = CLIPProcessor.from_pretrained(name, backend="pil")
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"Cannot download CLIP model {name!r} from the Hugging Face hub: {short_reason(err)}"
        ) from err
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    logger.info("saved CLIP %s to %s", name, out_dir)


@contextlib.contextmanager
def _progress_bars_disabled() -> Iterator[None]:
    """A daemon's log is no place for tqdm bars or load reports (each tower loaded alone
    reports the other tower's weights as unexpected; _tower() checks what matters)."""
    was_enabled = transformers_logging.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity()
    hub_verbosity = hub_logging.get_verbosity()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hub_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # retry warnings
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        if was_enabled:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _load_model_and_processor(name_or_path: str, labels: tuple[str, ...]) -> _Read:
    """A folder loads offline; a hub name loads from the HF cache, then from the hub."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return _from_folder(name_or_path, folder, labels)
    if not is_hub_name(name_or_path):
        raise ModelLoadError(fetch_hint(name_or_path, f"folder {folder.resolve()} does not exist"))
    return _from_hub(name_or_path, labels)


def _from_folder(name: str, folder: Path, labels: tuple[str, ...]) -> _Read:
    try:
        return _from_pretrained(str(folder), labels, local_files_only=True)
    except Exception as err:  # from_pretrained raises OSError, ValueError, safetensors errors...
        where = f"no loadable CLIP model in folder {folder.resolve()}"
        raise ModelLoadError(fetch_hint(name, where, err)) from err


def _from_hub(name: str, labels: tuple[str, ...]) -> _Read:
    """Try the cache first: an offline station would otherwise wait ~25 s of network retries."""
    cache = huggingface_hub.constants.HF_HUB_CACHE
    try:
        return _from_pretrained(name, labels, local_files_only=True)
    except Exception as cache_err:
        if huggingface_hub.is_offline_mode():
            where = (
                f"not a folder, not in the Hugging Face cache {cache}, and HF_HUB_OFFLINE is set"
            )
            raise ModelLoadError(fetch_hint(name, where, cache_err)) from cache_err
    unreachable = hub_unreachable_reason()
    if unreachable is not None:
        where = f"not a folder, not in the Hugging Face cache {cache}, and {unreachable}"
        raise ModelLoadError(fetch_hint(name, where))
    logger.info("CLIP %s is not in the Hugging Face cache %s; downloading it", name, cache)
    try:
        return _from_pretrained(name, labels, local_files_only=False)
    except Exception as err:
        where = (
            f"not a folder, not in the Hugging Face cache {cache}, and the hub did not provide it"
        )
        raise ModelLoadError(fetch_hint(name, where, err)) from err


def _from_pretrained(source: str, labels: tuple[str, ...], *, local_files_only: bool) -> _Read:
    """Load the text tower, embed the labels, free it; find the file with the vision weights.

    The image tower is not loaded here: the daemon builds it from this file itself, without
    transformers (vision_tower.py).
    """
    # backend="pil": torchvision is not installed, and asking avoids a fallback warning.
    processor = CLIPProcessor.from_pretrained(
        source, local_files_only=local_files_only, backend="pil"
    )
    config: Any = CLIPConfig.from_pretrained(source, local_files_only=local_files_only)
    # CLIPModel projects with the top-level projection_dim; a tower alone reads its own
    # sub-config, which some checkpoints leave at the default.
    text_config, vision_config = config.text_config, config.vision_config
    text_config.projection_dim = vision_config.projection_dim = config.projection_dim
    text = _tower(CLIPTextModelWithProjection, source, text_config, local_files_only)
    text_embeddings = _embed_labels(text, processor, labels)
    del text
    gc.collect()
    weights_path, logit_scale = _weights_and_logit_scale(source, local_files_only=local_files_only)
    return _Read(processor, vision_config, text_embeddings, weights_path, logit_scale)


def _tower(model_class: Any, source: str, config: Any, local_files_only: bool) -> Any:
    """One tower of a CLIP checkpoint; weights it lacks would be random, so they are an error."""
    model, info = model_class.from_pretrained(
        source, config=config, local_files_only=local_files_only, output_loading_info=True
    )
    if info["missing_keys"]:
        missing = ", ".join(sorted(info["missing_keys"])[:3])
        raise OSError(f"the checkpoint lacks {len(info['missing_keys'])} weights ({missing}, ...)")
    return model


def _weights_and_logit_scale(source: str, *, local_files_only: bool) -> tuple[str, float]:
    """The checkpoint file, and CLIP's learned temperature read straight from it: it is in
    neither tower."""
    readers = (_tensor_from_safetensors, _tensor_from_torch_file)
    for weights_name, read in zip(WEIGHT_FILES, readers, strict=True):
        path = cached_file(
            source,
            weights_name,
            local_files_only=local_files_only,
            _raise_exceptions_for_missing_entries=False,
        )
        if path is not None:
            return path, float(read(path, "logit_scale").float().exp())
    raise OSError(f"no model.safetensors or pytorch_model.bin with logit_scale in {source}")


def _tensor_from_safetensors(path: str, key: str) -> torch.Tensor:
    with safe_open(path, framework="pt") as weights:
        tensor: torch.Tensor = weights.get_tensor(key)
    return tensor


def _tensor_from_torch_file(path: str, key: str) -> torch.Tensor:
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return torch.as_tensor(state[key])


def crop_size(processor: Any) -> int:
    return int(processor.image_processor.crop_size["height"])


def _check_input_size(name: str, expected: int, processor: Any) -> None:
    if crop_size(processor) != expected:
        raise ModelLoadError(
            f"Cannot load CLIP model {name!r}: its image processor crops to "
            f"{crop_size(processor)} px but the vision tower expects {expected} px"
        )


def _embed_labels(text_model: Any, processor: Any, labels: tuple[str, ...]) -> torch.Tensor:
    """L2-normalised text embeddings, one row per label, computed once in float32."""
    with torch.inference_mode():
        tokens = processor.tokenizer(
            list(labels), padding=True, truncation=True, return_tensors="pt"
        )
        # text_embeds is what CLIPModel.get_text_features returns as pooler_output.
        features: torch.Tensor = text_model(**tokens).text_embeds
    return normalised(features.float())


def checkpoint_revision(name_or_path: str) -> str:
    """The hub commit for a cached hub model; a hash of the weights for a folder."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return weights_digest(folder)
    cached_config = huggingface_hub.try_to_load_from_cache(name_or_path, "config.json")
    if isinstance(cached_config, str):
        return Path(cached_config).parent.name  # .../snapshots/<commit>/config.json
    return "unknown"
