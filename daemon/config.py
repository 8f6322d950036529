"""Read the station's YAML configuration once into validated, immutable objects."""

import grp
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.config_checks import backup_folder_problems, layout_problems
from daemon.config_deployments import Deployment as Deployment  # re-exported
from daemon.config_deployments import DeploymentsFrom as DeploymentsFrom  # re-exported
from daemon.config_deployments import Events as Events  # re-exported
from daemon.config_errors import ConfigError as ConfigError  # re-exported: callers catch it here
from daemon.config_errors import Explainer, Loc

# `x as _x`: the models below keep the private names these had when they were defined here.
from daemon.config_errors import problem as _problem
from daemon.config_errors import problems as _problems
from daemon.config_fields import Extension, FolderPath, ImageFormat, Text
from daemon.config_fields import check_device as _check_device
from daemon.config_fields import follow_links as _follow_links
from daemon.config_fields import lower as _lower
from daemon.config_fields import one_or_many as _one_or_many
from daemon.config_fields import reject_blank as _reject_blank
from daemon.config_fields import resolve_database_url as _resolve_database_url
from daemon.config_fields import resolve_model_location as _resolve_model_location
from daemon.config_fields import upper as _upper
from daemon.config_labels import DEFAULT_LABELS as DEFAULT_LABELS  # re-exported
from daemon.config_labels import Label as Label  # re-exported: callers import it from here
from daemon.config_labels import duplicate_labels, label_set_problems
from daemon.config_strips import Strips
from daemon.config_yaml import read_yaml

logger = logging.getLogger(__name__)


class _Section(BaseModel):
    # Infinity and NaN are never sensible settings here (YAML spells them .inf and .nan).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# --- the sections ------------------------------------------------------------------------------


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
    # Imported here: APScheduler (and asyncio, importlib.metadata behind it) is a tenth of a
    # second that `tigerwatch status` would pay on every call; pydantic runs this validator
    # only for a schedule the file sets, never for the default.
    from apscheduler.triggers.cron import CronTrigger

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


def _head_choice(value: object) -> str:
    """`none`, `latest` or a head's id (from `tigerwatch adapt`)."""
    text = str(value).strip().lower()
    if text in ("none", "latest") or (text.isdigit() and int(text) > 0):
        return text
    raise ValueError("must be none, latest or the id of a head saved by `tigerwatch adapt`")


class Model(_Section):
    """Which CLIP model runs, and how."""

    name_or_path: Annotated[Text, AfterValidator(_resolve_model_location)] = (
        "openai/clip-vit-base-patch32"
    )
    batch_size: int = Field(default=16, ge=1, le=256)
    # auto: bf16 where the hardware has it natively (GPU, AVX512_BF16, AMX), else fp32.
    precision: Annotated[Literal["auto", "fp32", "bf16", "int8"], BeforeValidator(_lower)] = "auto"
    device: Annotated[str, BeforeValidator(_lower), AfterValidator(_check_device)] = "cpu"
    threads: int | None = Field(default=None, ge=1, le=1024)
    # Batches the model runs at once, sharing `threads`; null: one per thread on a CPU (the
    # decoders then slow one batch, not stall both threads), one on a GPU.
    parallel_batches: int | None = Field(default=None, ge=1, le=1024)
    # What of the frame the model sees: CLIP's centre crop, the letterboxed whole frame, or
    # overlapping squares across it (see README "Views").
    view: Annotated[Literal["center", "pad", "crops"], BeforeValidator(_lower)] = "crops"
    head: Annotated[str, BeforeValidator(_head_choice)] = "none"


class InfraredDecision(_Section):
    """Thresholds for infrared (night) frames; unset ones are the day thresholds."""

    positive_threshold: float | None = Field(default=None, gt=0, le=1)
    uncertain_threshold: float | None = Field(default=None, ge=0, le=1)


class Decision(_Section):
    """Thresholds on the tiger score (the summed probability of the target labels)."""

    positive_threshold: float = Field(default=0.5, gt=0, le=1)
    uncertain_threshold: float = Field(default=0.2, ge=0, le=1)
    infrared: InfraredDecision = Field(default_factory=InfraredDecision)

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> "Decision":
        found: list[tuple[Loc, str]] = []
        if self.uncertain_threshold > self.positive_threshold:
            message = f"must not be greater than positive_threshold ({self.positive_threshold:g})"
            found.append((("uncertain_threshold",), message))
        positive, uncertain = self.thresholds(infrared=True)
        if uncertain > positive and not found:
            message = f"must not be greater than the infrared positive threshold ({positive:g})"
            found.append((("infrared", "uncertain_threshold"), message))
        if found:
            raise _problems(found)
        return self

    def thresholds(self, *, infrared: bool) -> tuple[float, float]:
        """(positive, uncertain) for a frame of this light."""
        if not infrared:
            return self.positive_threshold, self.uncertain_threshold
        night = self.infrared
        return (
            self.positive_threshold
            if night.positive_threshold is None
            else night.positive_threshold,
            self.uncertain_threshold
            if night.uncertain_threshold is None
            else night.uncertain_threshold,
        )


class Images(_Section):
    """Which files count as images, and the decoders allowed to open them."""

    formats: Annotated[tuple[ImageFormat, ...], BeforeValidator(_one_or_many)] = Field(
        default=("JPEG", "MPO", "PNG", "WEBP"), min_length=1
    )
    extensions: Annotated[tuple[Extension, ...], BeforeValidator(_one_or_many)] = Field(
        default=(".jpg", ".jpeg", ".png", ".webp"), min_length=1
    )
    max_pixels: int = Field(default=120_000_000, gt=0)
    # Checked on the opened file before one byte is read; larger files are quarantined.
    max_file_bytes: int = Field(default=200_000_000, gt=0)


class Watch(_Section):
    """How the inboxes are watched."""

    quiet_seconds: float = Field(default=5.0, ge=0)
    # How long an upload still open for writing, or an image without its end marker, is waited
    # for before it is taken as it is (and, if truncated, quarantined as such).
    incomplete_grace_seconds: float = Field(default=600.0, ge=0)
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
    # Decoded pixels all decoder processes may hold at once; a larger image is decoded alone.
    decode_pixel_budget: int = Field(default=120_000_000, gt=0)
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
        # A number no group has is a typo, and the staff could never read the files.
        try:
            return grp.getgrgid(int(text)).gr_gid
        except KeyError:
            raise _problem(f"no group with id {text} on this machine") from None
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
    if mode & 0o600 != 0o600:
        # Read to verify its moves; write because the dated folders get this mode (plus x) too,
        # and a folder the owner cannot write locks the daemon out of it.
        raise _problem(
            f"{text!r} must give the owner read and write (e.g. '0640'): the daemon verifies "
            "its moves and writes into the dated folders it makes with this mode"
        )
    return mode


class Files(_Section):
    """Ownership of the files and folders the daemon creates in the destinations."""

    group: Annotated[int | None, BeforeValidator(_group_id)] = None
    mode: Annotated[int | None, BeforeValidator(_file_mode)] = None


def _folder_name(value: str) -> str:
    if value in (".", "..") or "/" in value or value.startswith("."):
        raise _problem("must be one folder name: no '/', not hidden, not '.' or '..'")
    return value


FolderName = Annotated[Text, AfterValidator(_folder_name)]


class Verdicts(_Section):
    """The verdict folders inside the review folder: staff move a frame there to judge it."""

    folder: FolderName = "verdicts"  # <review>/<folder>/<tiger> and .../<not_tiger>
    tiger: FolderName = "tiger"
    not_tiger: FolderName = "not-tiger"
    # Events are hints (and a Samba share on another host raises none): a scan on this period.
    rescan_seconds: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _two_folders(self) -> "Verdicts":
        if self.tiger == self.not_tiger:
            raise _problems([(("not_tiger",), "must differ from verdicts.tiger")])
        return self


class Logging(_Section):
    """How much the daemon logs."""

    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"


# Config fields that hold a whole section: a missing or empty section means "all defaults".
_SECTIONS = (
    "database",
    "model",
    "decision",
    "images",
    "strips",
    "watch",
    "worker",
    "verdicts",
    "logging",
    "deployments_from",
    "deployments",
    "events",
)
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
    strips: Strips = Field(default_factory=Strips)
    watch: Watch = Field(default_factory=Watch)
    worker: Worker = Field(default_factory=Worker)
    files: Files = Field(default_factory=Files)
    verdicts: Verdicts = Field(default_factory=Verdicts)
    logging: Logging = Field(default_factory=Logging)
    deployments_from: DeploymentsFrom = Field(default_factory=DeploymentsFrom)
    deployments: dict[Text, Deployment] = Field(default_factory=dict)
    events: Events = Field(default_factory=Events)
    source: Path

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

    @model_validator(mode="after")
    def _keep_backups_apart(self) -> "Config":
        found = backup_folder_problems(
            self.database.backup.folder,
            [inbox.path for inbox in self.paths.inbox],
            self.paths.destinations,
        )
        if found:
            raise _problems(found)
        return self

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: tuple[Label, ...]) -> tuple[Label, ...]:
        found = label_set_problems(labels) + duplicate_labels(labels)
        if found:
            raise _problems(found)
        return labels


# Messages name the YAML keys of Config, never the fields the loader sets.
_EXPLAINER = Explainer(Config, _LOADER_FIELDS)


# --- loading -----------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read, parse and validate a YAML config file; every problem is reported at once."""
    config = parse_config(read_yaml(path), source=path)
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
        problems.extend(_EXPLAINER.lines(err, shown))
    if problems:
        raise ConfigError(source, problems)
    return config


def _kind(value: object) -> str:
    kinds = {list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)
