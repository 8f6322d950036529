"""Whether a hub model can be had at all, decided before torch loads: cached, or the hub answers."""

from __future__ import annotations

import re
from pathlib import Path

import huggingface_hub

from daemon.classify.hub_probe import hub_unreachable_reason

DEFAULT_HUB_MODEL = "openai/clip-vit-base-patch32"
MAX_REASON_CHARS = 300
# The hub's repo id rule ("org/name" or "name"); anything else can only be a folder.
HUB_NAME = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]{0,95}")


def unobtainable_reason(name_or_path: str) -> str | None:
    """The loader's own message when the model is not a folder, not in the cache and the hub
    is off or silent; None when loading may succeed (a folder, a cached or reachable model).

    Asked before importing torch and transformers, which take seconds on a station's CPU: an
    offline station learns what to do at once instead of after them."""
    try:
        return _unobtainable(name_or_path)
    except OSError:  # a folder or cache this user cannot read: the loader names the problem
        return None


def _unobtainable(name_or_path: str) -> str | None:
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return None  # a broken folder gets its own message from the loader
    if not is_hub_name(name_or_path):
        return fetch_hint(name_or_path, f"folder {folder.resolve()} does not exist")
    if isinstance(huggingface_hub.try_to_load_from_cache(name_or_path, "config.json"), str):
        return None
    missing = (
        f"not a folder, not in the Hugging Face cache {huggingface_hub.constants.HF_HUB_CACHE}"
    )
    if huggingface_hub.is_offline_mode():
        return fetch_hint(name_or_path, f"{missing}, and HF_HUB_OFFLINE is set")
    unreachable = hub_unreachable_reason()
    return (
        None if unreachable is None else fetch_hint(name_or_path, f"{missing}, and {unreachable}")
    )


def is_hub_name(name: str) -> bool:
    return HUB_NAME.fullmatch(name) is not None and ".." not in name and "--" not in name


def fetch_hint(name: str, where: str, err: BaseException | None = None) -> str:
    """One self-sufficient message: what failed, where we looked, and how to get the model."""
    hub_name = name if is_hub_name(name) and "/" in name else DEFAULT_HUB_MODEL
    folder = "./" + hub_name.rsplit("/", 1)[-1]
    reason = f" ({short_reason(err)})" if err is not None else ""
    return (
        f"Cannot load CLIP model {name!r}: {where}{reason}. "
        f"To fetch it: on a machine with internet run "
        f"`tigerwatch download-model {hub_name} {folder}`, copy that folder to this station "
        f"and set model.name_or_path to its path."
    )


def short_reason(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    first_line = lines[0] if lines else type(err).__name__
    return first_line[:MAX_REASON_CHARS]
