"""Field types and validators of the configuration: text, folders, extensions, devices, URLs."""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, ValidationInfo

from daemon.config_errors import problem
from daemon.storage.urls import anchored_url


def _base_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    base = context.get("base_dir") if isinstance(context, Mapping) else None
    return base if isinstance(base, Path) else None


def _strip_non_empty(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise problem("must not be empty")
    return value


def reject_blank(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise problem("must not be empty")
    return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Expand `~` and anchor a relative path at the config file's folder."""
    path = value.expanduser()
    base = _base_dir(info)
    if base is not None and not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def follow_links(value: Path) -> Path:
    """The real folder behind an inbox that is itself a symlink; other paths stay as written.

    The daemon never follows a symlink it finds inside an inbox, so an inbox given as a link
    (to a card reader's mount, an FTP account's folder) is resolved once, here. Links in parent
    folders are left alone: rows recorded under that spelling must keep matching their files.
    """
    return Path(os.path.realpath(value)) if value.is_symlink() else value


def lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def one_or_many(value: object) -> object:
    """Let a list-valued key also take a single entry."""
    if value is None or isinstance(value, list | tuple):
        return value
    return [value]


def _check_extension(value: str) -> str:
    if len(value) < 2 or not value.startswith("."):
        raise problem("must start with a dot, like .jpg")
    return value


def check_device(value: str) -> str:
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", value):
        raise problem("must be cpu, cuda, cuda:N or auto")
    return value


def resolve_model_location(value: str, info: ValidationInfo) -> str:
    """Anchor a local model folder at the config file's folder; leave hub ids alone."""
    looks_local = value in (".", "..") or value.startswith(("./", "../", "~", "/"))
    candidate = Path(value).expanduser()
    base = _base_dir(info)
    if base is not None and not candidate.is_absolute():
        if not (looks_local or (base / candidate).is_dir()):
            return value
        candidate = base / candidate
    elif not looks_local:
        return value
    return os.path.normpath(candidate)


def resolve_database_url(value: str, info: ValidationInfo) -> str:
    """Anchor a relative SQLite file at the config file's folder; other URLs pass unchanged."""
    try:
        return anchored_url(value, _base_dir(info))
    except ValueError as err:
        raise problem(str(err)) from None


Text = Annotated[str, BeforeValidator(_strip_non_empty)]
FolderPath = Annotated[Path, BeforeValidator(reject_blank), AfterValidator(_resolve_path)]
Extension = Annotated[str, BeforeValidator(lower), AfterValidator(_check_extension)]
ImageFormat = Annotated[Literal["JPEG", "MPO", "PNG", "WEBP"], BeforeValidator(upper)]
