"""The configuration's labels: prompt sets per light, their checks and the default label set."""

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.config_errors import Loc
from daemon.config_errors import problem as _problem
from daemon.config_errors import problems as _problems
from daemon.config_fields import Text


class _Section(BaseModel):
    # As daemon.config's sections: immutable, no unknown keys, no infinities.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Label(_Section):
    """One zero-shot label: its prompts (ensembled) per light; the targets together mean tiger."""

    name: Text
    target: bool = False
    prompts: tuple[Text, ...] = Field(min_length=1)
    # Used for infrared (night) frames; empty means the day prompts serve both.
    infrared_prompts: tuple[Text, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _accept_short_forms(cls, data: object) -> object:
        # The older forms: the label text alone, or {text, target}; the text is the one prompt.
        if isinstance(data, str):
            data = {"text": data}
        if not isinstance(data, Mapping | Label):
            raise _problem("must be a mapping with name, target and prompts, or the label text")
        if isinstance(data, Mapping) and "text" in data:
            return _from_text_form(data)
        return data

    def prompts_for(self, *, infrared: bool) -> tuple[str, ...]:
        return self.infrared_prompts if infrared and self.infrared_prompts else self.prompts


def _from_text_form(data: Mapping[str, object]) -> dict[str, object]:
    clash = [key for key in ("name", "prompts", "infrared_prompts") if key in data]
    if clash:
        raise _problems([(("text",), f"give either text or {', '.join(clash)}, not both")])
    text = data["text"]
    if not isinstance(text, str) or not text.strip():
        message = "must not be empty" if isinstance(text, str) or text is None else "must be text"
        raise _problems([(("text",), message)])
    rest = {key: value for key, value in data.items() if key != "text"}
    return rest | {"name": text.strip(), "prompts": (text.strip(),)}


def _camera_trap_label(
    name: str, prompts: list[str], night: list[str], target: bool = False
) -> Label:
    return Label(name=name, target=target, prompts=tuple(prompts), infrared_prompts=tuple(night))


_NIGHT = "a black and white infrared camera trap photo of"
# The notebook's six labels, meaning kept, with prompts written for camera-trap frames.
DEFAULT_LABELS: tuple[Label, ...] = (
    _camera_trap_label(
        "Amur tiger",
        [
            "a camera trap photo of an Amur tiger",
            "a camera trap photo of a Siberian tiger in the forest",
            "a photo of an Amur tiger",
        ],
        [f"{_NIGHT} a tiger at night", f"{_NIGHT} an Amur tiger in the forest at night"],
        target=True,
    ),
    _camera_trap_label(
        "Bengal tiger",
        ["a camera trap photo of a Bengal tiger", "a photo of a Bengal tiger"],
        [f"{_NIGHT} a Bengal tiger at night"],
        target=True,
    ),
    _camera_trap_label(
        "lion",
        ["a camera trap photo of a lion", "a photo of a lion"],
        [f"{_NIGHT} a lion at night"],
    ),
    _camera_trap_label(
        "leopard",
        ["a camera trap photo of a leopard", "a photo of a leopard"],
        [f"{_NIGHT} a leopard at night"],
    ),
    _camera_trap_label(
        "domestic cat",
        ["a camera trap photo of a domestic cat", "a photo of a domestic cat"],
        [f"{_NIGHT} a cat at night"],
    ),
    _camera_trap_label(
        "without a tiger",
        [
            "a camera trap photo without a tiger",
            "a camera trap photo of an empty forest",
            "a camera trap photo of a deer or a wild boar",
        ],
        [f"{_NIGHT} an empty forest at night", f"{_NIGHT} a deer at night"],
    ),
)


def label_set_problems(labels: tuple[Label, ...]) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    if len(labels) < 2:
        found.append(((), "needs at least 2 labels: a tiger (target) and something else"))
    if not any(label.target for label in labels):
        found.append(((), "needs at least one label with target: true (the tiger prompts)"))
    if all(label.target for label in labels):
        found.append(((), "needs at least one label without target: true (what is not a tiger)"))
    return found


def duplicate_labels(labels: tuple[Label, ...]) -> list[tuple[Loc, str]]:
    first_seen: dict[str, int] = {}
    found: list[tuple[Loc, str]] = []
    for index, label in enumerate(labels):
        key = label.name.casefold()
        if key in first_seen:
            message = f"repeats labels[{first_seen[key]}].name (names must be unique, any case)"
            found.append(((index, "name"), message))
        first_seen.setdefault(key, index)
    return found
