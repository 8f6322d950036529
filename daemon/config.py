"""Read the station's YAML configuration once into validated, immutable objects."""

import difflib
import grp
import logging
import os
import re
import types
from collections.abc import Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from daemon.config_checks import layout_problems
from daemon.storage.urls import anchored_url

logger = logging.getLogger(__name__)

# A key path inside the YAML document, e.g. ("paths", "inbox", 0, "path").
Loc = tuple[str | int, ...]

# Error type for validators that report several problems at once, each at its own sub-path.
_MANY_PROBLEMS = "tigerwatch_problems"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds every reason, one line each."""

    def __init__(self, path: Path, problems: Iterable[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


# --- small validators shared by the models ---------------------------------------------------


def _problem(message: str) -> PydanticCustomError:
    # The message goes through the context so that braces in it are never read as placeholders.
    return PydanticCustomError("tigerwatch", "{message}", {"message": message})


def _problems(found: list[tuple[Loc, str]]) -> PydanticCustomError:
    summary = "; ".join(message for _, message in found)
    return PydanticCustomError(_MANY_PROBLEMS, "{summary}", {"summary": summary, "problems": found})


def _base_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    base = context.get("base_dir") if isinstance(context, Mapping) else None
    return base if isinstance(base, Path) else None


def _strip_non_empty(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise _problem("must not be empty")
    return value


def _reject_blank(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise _problem("must not be empty")
    return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Expand `~` and anchor a relative path at the config file's folder."""
    path = value.expanduser()
    base = _base_dir(info)
    if base is not None and not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def _follow_links(value: Path) -> Path:
    """The real folder behind an inbox that is itself a symlink; other paths stay as written.

    The daemon never follows a symlink it finds inside an inbox, so an inbox given as a link
    (to a card reader's mount, an FTP account's folder) is resolved once, here. Links in parent
    folders are left alone: rows recorded under that spelling must keep matching their files.
    """
    return Path(os.path.realpath(value)) if value.is_symlink() else value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _one_or_many(value: object) -> object:
    """Let a list-valued key also take a single entry."""
    if value is None or isinstance(value, list | tuple):
        return value
    return [value]


def _check_extension(value: str) -> str:
    if len(value) < 2 or not value.startswith("."):
        raise _problem("must start with a dot, like .jpg")
    return value


def _check_device(value: str) -> str:
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", value):
        raise _problem("must be cpu, cuda, cuda:N or auto")
    return value


def _resolve_model_location(value: str, info: ValidationInfo) -> str:
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


def _resolve_database_url(value: str, info: ValidationInfo) -> str:
    """Anchor a relative SQLite file at the config file's folder; other URLs pass unchanged."""
    try:
        return anchored_url(value, _base_dir(info))
    except ValueError as err:
        raise _problem(str(err)) from None


Text = Annotated[str, BeforeValidator(_strip_non_empty)]
FolderPath = Annotated[Path, BeforeValidator(_reject_blank), AfterValidator(_resolve_path)]
Extension = Annotated[str, BeforeValidator(_lower), AfterValidator(_check_extension)]
ImageFormat = Annotated[Literal["JPEG", "MPO", "PNG", "WEBP"], BeforeValidator(_upper)]


class _Section(BaseModel):
    # Infinity and NaN are never sensible settings here (YAML spells them .inf and .nan).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# --- the sections ------------------------------------------------------------------------------


class Label(_Section):
    """One zero-shot prompt; the target labels together mean "tiger"."""

    text: Text
    target: bool = False

    @model_validator(mode="before")
    @classmethod
    def _accept_plain_text(cls, data: object) -> object:
        if isinstance(data, str):
            return {"text": data}
        if not isinstance(data, Mapping | Label):
            raise _problem("must be a mapping with text and target, or the label text alone")
        return data


class Inbox(_Section):
    """A folder to watch; `polling` scans it instead of relying on inotify (network mounts)."""

    path: Annotated[FolderPath, AfterValidator(_follow_links)]
    polling: bool = False

    @model_validator(mode="before")
    @classmethod
    def _accept_plain_path(cls, data: object) -> object:
        if isinstance(data, str | Path):
            return {"path": data}
        if not isinstance(data, Mapping | Inbox):
            raise _problem("must be a folder path or a mapping with path and polling")
        return data


class Paths(_Section):
    """Where images arrive (inboxes) and where the daemon sorts them to."""

    inbox: Annotated[tuple[Inbox, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
    review: FolderPath
    archive: FolderPath
    quarantine: FolderPath
    # The real defaults (<review>/uncertain, <archive>/duplicates) are filled in by
    # _derive_subfolders; these placeholders only avoid a misleading "is required" when the
    # parent folder itself is invalid.
    uncertain: FolderPath = Path("uncertain")
    duplicates: FolderPath = Path("duplicates")

    @model_validator(mode="before")
    @classmethod
    def _derive_subfolders(cls, data: object) -> object:
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for key, parent_key in (("uncertain", "review"), ("duplicates", "archive")):
            parent = filled.get(parent_key)
            if key not in filled and isinstance(parent, str | Path) and str(parent).strip():
                filled[key] = Path(parent) / key
        return filled

    @property
    def destinations(self) -> dict[str, Path]:
        """The output folders by key name, parents before the subfolders they usually hold."""
        return {
            "review": self.review,
            "uncertain": self.uncertain,
            "archive": self.archive,
            "duplicates": self.duplicates,
            "quarantine": self.quarantine,
        }

    @model_validator(mode="after")
    def _keep_folders_apart(self) -> "Paths":
        found = layout_problems([inbox.path for inbox in self.inbox], self.destinations)
        if found:
            raise _problems(found)
        return self


def _check_crontab(value: str) -> str:
    try:
        CronTrigger.from_crontab(value)
    except ValueError as err:
        raise _problem(f"is not a crontab schedule (e.g. '30 3 * * *'): {err}") from None
    return value


class Backup(_Section):
    """Online copies of the SQLite log on the wall clock's schedule; off without a folder."""

    folder: FolderPath | None = None
    schedule: Annotated[str, AfterValidator(_check_crontab)] = "30 3 * * *"  # station local time
    keep: int = Field(default=14, ge=1)


class Database(_Section):
    """Where results are recorded (an SQLAlchemy URL), and where its backups go."""

    url: Annotated[str, BeforeValidator(_reject_blank), AfterValidator(_resolve_database_url)] = (
        Field(default="sqlite:///tigerwatch.db", validate_default=True)
    )
    backup: Backup = Backup()


class Model(_Section):
    """Which CLIP model runs, and how."""

    name_or_path: Annotated[Text, AfterValidator(_resolve_model_location)] = (
        "openai/clip-vit-base-patch32"
    )
    batch_size: int = Field(default=16, ge=1, le=256)
    precision: Annotated[Literal["fp32", "bf16", "int8"], BeforeValidator(_lower)] = "fp32"
    device: Annotated[str, BeforeValidator(_lower), AfterValidator(_check_device)] = "cpu"
    threads: int | None = Field(default=None, ge=1, le=1024)


class Decision(_Section):
    """Thresholds on the tiger score (the summed probability of the target labels)."""

    positive_threshold: float = Field(default=0.5, gt=0, le=1)
    uncertain_threshold: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> "Decision":
        if self.uncertain_threshold > self.positive_threshold:
            message = f"must not be greater than positive_threshold ({self.positive_threshold:g})"
            raise _problems([(("uncertain_threshold",), message)])
        return self


class Images(_Section):
    """Which files count as images, and the decoders allowed to open them."""

    formats: Annotated[tuple[ImageFormat, ...], BeforeValidator(_one_or_many)] = Field(
        default=("JPEG", "MPO", "PNG", "WEBP"), min_length=1
    )
    extensions: Annotated[tuple[Extension, ...], BeforeValidator(_one_or_many)] = Field(
        default=(".jpg", ".jpeg", ".png", ".webp"), min_length=1
    )
    max_pixels: int = Field(default=120_000_000, gt=0)


class Watch(_Section):
    """How the inboxes are watched."""

    quiet_seconds: float = Field(default=5.0, ge=0)
    rescan_interval_seconds: float = Field(default=300.0, gt=0, le=3600)
    health_check_seconds: float = Field(default=10.0, gt=0)
    # Work waiting and nothing finished for this long: the watchdog ping is withheld.
    stall_seconds: float = Field(default=300.0, gt=0)
    ignore_patterns: Annotated[tuple[Text, ...], BeforeValidator(_one_or_many)] = ()


class Worker(_Section):
    """How queued files are decoded and retried."""

    batch_max_wait_seconds: float = Field(default=1.0, ge=0)
    decode_processes: int = Field(default=2, ge=1, le=32)
    decode_timeout_seconds: float = Field(default=60.0, gt=0)
    max_decode_attempts: int = Field(default=3, ge=1)
    retry_delay_seconds: float = Field(default=60.0, ge=0)
    destination_retry_seconds: float = Field(default=30.0, gt=0)
    # Tries of a move that fails for one entry alone (doubling delays from the one above).
    max_move_attempts: int = Field(default=5, ge=1)


def _group_id(value: object) -> object:
    """A group name or number, checked against this machine's groups and turned into a gid."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise _problem(f"no group named {text!r} on this machine") from None


def _file_mode(value: object) -> object:
    """An octal permission string such as "0640" (YAML would read a bare 0640 as a number)."""
    if value is None:
        return value
    text = str(value).strip()
    try:
        mode = int(text, 8)
    except ValueError:
        raise _problem(f"must be an octal mode such as '0640', not {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise _problem("must be between 0000 and 0777")
    if not mode & 0o400:
        raise _problem("must let the owner read the file (the daemon must verify its moves)")
    return mode


class Files(_Section):
    """Ownership of the files and folders the daemon creates in the destinations."""

    group: Annotated[int | None, BeforeValidator(_group_id)] = None
    mode: Annotated[int | None, BeforeValidator(_file_mode)] = None


class Logging(_Section):
    """How much the daemon logs."""

    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"


DEFAULT_LABELS: tuple[Label, ...] = (
    Label(text="a photo of an Amur tiger", target=True),
    Label(text="a photo of a Bengal tiger", target=True),
    Label(text="a photo of a lion"),
    Label(text="a photo of a leopard"),
    Label(text="a photo of a domestic cat"),
    Label(text="a photo without a tiger"),
)

# Config fields that hold a whole section: a missing or empty section means "all defaults".
_SECTIONS = ("database", "model", "decision", "images", "watch", "worker", "logging")
# Config fields set by the loader, never read from YAML.
_LOADER_FIELDS = frozenset({"source"})


class Config(_Section):
    """The whole station configuration."""

    station: Text = "tigerwatch-station"
    paths: Paths
    database: Database = Field(default_factory=Database)
    model: Model = Field(default_factory=Model)
    labels: tuple[Label, ...] = DEFAULT_LABELS
    decision: Decision = Field(default_factory=Decision)
    images: Images = Field(default_factory=Images)
    watch: Watch = Field(default_factory=Watch)
    worker: Worker = Field(default_factory=Worker)
    files: Files = Field(default_factory=Files)
    logging: Logging = Field(default_factory=Logging)
    source: Path

    @property
    def label_texts(self) -> tuple[str, ...]:
        return tuple(label.text for label in self.labels)

    @property
    def target_labels(self) -> tuple[str, ...]:
        return tuple(label.text for label in self.labels if label.target)

    @property
    def target_indices(self) -> tuple[int, ...]:
        """Positions of the target labels in `labels` (and in `label_texts`)."""
        return tuple(index for index, label in enumerate(self.labels) if label.target)

    @model_validator(mode="before")
    @classmethod
    def _validate_every_section(cls, data: object) -> object:
        # A defaulted section would skip validation, and with it the relative-path resolution.
        if not isinstance(data, Mapping):
            return data
        filled = dict(data)
        for section in _SECTIONS:
            if filled.get(section) is None:
                filled[section] = {}
        return filled

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: tuple[Label, ...]) -> tuple[Label, ...]:
        found = _label_set_problems(labels) + _duplicate_labels(labels)
        if found:
            raise _problems(found)
        return labels


def _label_set_problems(labels: tuple[Label, ...]) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    if len(labels) < 2:
        found.append(((), "needs at least 2 labels: a tiger (target) and something else"))
    if not any(label.target for label in labels):
        found.append(((), "needs at least one label with target: true (the tiger prompts)"))
    if all(label.target for label in labels):
        found.append(((), "needs at least one label without target: true (what is not a tiger)"))
    return found


def _duplicate_labels(labels: tuple[Label, ...]) -> list[tuple[Loc, str]]:
    first_seen: dict[str, int] = {}
    found: list[tuple[Loc, str]] = []
    for index, label in enumerate(labels):
        key = label.text.casefold()
        if key in first_seen:
            message = f"repeats labels[{first_seen[key]}].text (texts must be unique, any case)"
            found.append(((index, "text"), message))
        first_seen.setdefault(key, index)
    return found


# --- loading -----------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read, parse and validate a YAML config file; every problem is reported at once."""
    config = parse_config(_read_yaml(path), source=path)
    logger.debug("Loaded configuration from %s", path)
    return config


def parse_config(data: object, *, source: Path) -> Config:
    """Validate an already-parsed YAML value; relative paths are anchored at source's folder."""
    shown = str(source)
    if data is None:
        raise ConfigError(
            source, [f"{shown}: the file is empty; it needs at least a paths section"]
        )
    if not isinstance(data, Mapping):
        message = f"the top level must be a mapping of keys to values, not {_kind(data)}"
        raise ConfigError(source, [f"{shown}: {message}"])
    problems = [
        f"{shown}: {key}: unknown key (set by the loader)" for key in _LOADER_FIELDS & data.keys()
    ]
    absolute_source = Path(os.path.normpath(source.expanduser().absolute()))
    values = {key: value for key, value in data.items() if key not in _LOADER_FIELDS}
    values["source"] = absolute_source
    try:
        config = Config.model_validate(values, context={"base_dir": absolute_source.parent})
    except ValidationError as err:
        problems.extend(_explain(err, shown))
    if problems:
        raise ConfigError(source, problems)
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        self.flatten_mapping(node)
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> object:
    shown = str(path)
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(path, [f"{shown}: no such file"]) from err
    except OSError as err:
        raise ConfigError(path, [f"{shown}: cannot read the file: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError(path, [f"{shown}: is not UTF-8 text ({err.reason})"]) from err
    try:
        # Safe: _UniqueKeyLoader is a SafeLoader, so no arbitrary Python objects are built.
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(path, [f"{shown}: {_describe_yaml_error(err)}"]) from err


def _describe_yaml_error(err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"YAML error at line {mark.line + 1}, column {mark.column + 1}: {err.problem}"
    return f"YAML error: {err}"


def _kind(value: object) -> str:
    kinds = {list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


# --- turning pydantic's errors into one line per problem ------------------------------------------


def _explain(err: ValidationError, shown: str) -> list[str]:
    lines: list[str] = []
    for error in err.errors():
        for loc, message in _split(error):
            key = _format_loc(loc)
            line = f"{shown}: {key}: {message}" if key else f"{shown}: {message}"
            if line not in lines:
                lines.append(line)
    return lines


def _split(error: ErrorDetails) -> Iterator[tuple[Loc, str]]:
    """Yield (clean key path, human message) pairs; one pydantic error may carry several."""
    if error["type"] == _MANY_PROBLEMS:
        loc, _ = _walk(error["loc"], keep_last=False)
        for sub_loc, message in error.get("ctx", {})["problems"]:
            yield (*loc, *sub_loc), message
        return
    if _only_counts_failed_items(error):
        return
    if error["type"] == "invalid_key":  # a YAML key that is not text, such as `3:`
        loc, _ = _walk((*error["loc"][:-1], str(error["input"])), keep_last=True)
        yield loc, "unknown key"
        return
    keep_last = error["type"] == "extra_forbidden"
    loc, annotation = _walk(error["loc"], keep_last=keep_last)
    yield loc, _human_message(error, loc, annotation)


def _only_counts_failed_items(error: ErrorDetails) -> bool:
    """pydantic adds "too short" when list items fail; the item errors already say why."""
    entries = error["input"]
    minimum = error.get("ctx", {}).get("min_length", 0)
    return (
        error["type"] == "too_short"
        and isinstance(entries, list | tuple)
        and len(entries) >= minimum
    )


_MESSAGES = {
    "missing": "is required",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be text",
    "path_type": "must be a folder path",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values",
    "string_too_short": "must not be empty",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must have at least {min_length} entries",
    "too_long": "must have at most {max_length} entries",
}


def _human_message(error: ErrorDetails, loc: Loc, annotation: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if error["input"] is None and kind.endswith(("_type", "_parsing")):
        return "must not be empty"
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind == "literal_error":
        choices = get_args(annotation) if get_origin(annotation) is Literal else ()
        return f"must be one of {', '.join(map(str, choices))}" if choices else error["msg"]
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    template = _MESSAGES.get(kind)
    if template is None:
        return error["msg"]
    return template.format(**{name: _plain_number(value) for name, value in ctx.items()})


def _plain_number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _unknown_key_message(loc: Loc) -> str:
    known = _known_keys(loc[:-1])
    key = str(loc[-1]) if loc else ""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (known keys: {', '.join(known)})" if known else "unknown key"


def _yaml_keys(model: type[BaseModel]) -> list[str]:
    return [name for name in model.model_fields if name not in _LOADER_FIELDS]


def _known_keys(parent: Loc) -> list[str]:
    _, annotation = _walk(parent, keep_last=False)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _yaml_keys(annotation)
    return []


def _walk(loc: tuple[str | int, ...], *, keep_last: bool) -> tuple[Loc, Any]:
    """Keep the loc segments that are YAML keys or list positions; drop pydantic's own tags.

    Returns the cleaned key path and the type annotation found at its end.
    """
    clean: list[str | int] = []
    current: Any = Config
    for position, segment in enumerate(loc):
        current = _unwrap(current)
        is_model = isinstance(current, type) and issubclass(current, BaseModel)
        if is_model and isinstance(segment, str) and segment in _yaml_keys(current):
            clean.append(segment)
            current = current.model_fields[segment].annotation
        elif isinstance(segment, int) and get_origin(current) is tuple:
            clean.append(segment)
            current = get_args(current)[0]
        elif keep_last and position == len(loc) - 1:
            clean.append(segment)
            current = None
    return tuple(clean), _unwrap(current)


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and `| None` to reach the type that describes the value."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _format_loc(loc: Loc) -> str:
    text = ""
    for segment in loc:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else segment
    return text
