"""The image tower from a checkpoint file: its weights memory-mapped, never copied."""

from __future__ import annotations

import torch
from safetensors import safe_open

from daemon.classify.checkpoint import CheckpointParts
from daemon.classify.errors import ModelLoadError
from daemon.classify.model_source import fetch_hint
from daemon.classify.vision_tower import ClipVisionTower, build_tower

# The tensors of a CLIP checkpoint (CLIPModel's or a vision tower's own) the image tower needs.
TOWER_PREFIXES = ("vision_model.", "visual_projection.")
MISSING_SHOWN = 3


def load_tower(name: str, parts: CheckpointParts) -> ClipVisionTower:
    """The tower `parts` describes with its checkpoint's weights; a weight the file lacks, or
    one of the wrong shape, is a ModelLoadError naming the model, the file and the weight."""
    path = parts.weights_path
    try:
        weights = _tower_weights(path)
        return build_tower(parts.tower, weights)
    except KeyError as err:
        missing: list[str] = err.args[0]
        listed = ", ".join(missing[:MISSING_SHOWN]) + (", ..." if len(missing) > 3 else "")
        where = f"its checkpoint {path} lacks {len(missing)} vision weight(s): {listed}"
        raise ModelLoadError(fetch_hint(name, where)) from err
    except (OSError, RuntimeError, ValueError) as err:  # unreadable, a wrong shape, an activation
        where = f"the vision weights in {path} do not load"
        raise ModelLoadError(fetch_hint(name, where, err)) from err


def _tower_weights(path: str) -> dict[str, torch.Tensor]:
    """The tower's tensors, as float32. A float32 file is mapped, not read: its pages are the
    file's, shared with the page cache and dropped under pressure, not the daemon's own memory.
    Another float type (a half-precision checkpoint) is converted, as transformers does."""
    if path.endswith(".safetensors"):
        with safe_open(path, framework="pt") as weights:
            found = {key: weights.get_tensor(key) for key in weights.keys() if _wanted(key)}  # noqa: SIM118
    else:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        found = {key: value for key, value in state.items() if _wanted(key)}
    return {
        key: value.float() if value.is_floating_point() else value for key, value in found.items()
    }


def _wanted(key: str) -> bool:
    return key.startswith(TOWER_PREFIXES)
