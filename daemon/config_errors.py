"""Turn pydantic's validation errors into one readable line per problem, at its YAML key path."""

import difflib
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

# A key path inside the YAML document, e.g. ("paths", "inbox", 0, "path").
Loc = tuple[str | int, ...]

# Error type for validators that report several problems at once, each at its own sub-path.
MANY_PROBLEMS = "tigerwatch_problems"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds every reason, one line each."""

    def __init__(self, path: Path, problems: Iterable[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def problem(message: str) -> PydanticCustomError:
    """One problem, raised by a validator; the message is shown as written."""
    # The message goes through the context so that braces in it are never read as placeholders.
    return PydanticCustomError("tigerwatch", "{message}", {"message": message})


def problems(found: list[tuple[Loc, str]]) -> PydanticCustomError:
    """Several problems at once, each at its own key path below the validated value."""
    summary = "; ".join(message for _, message in found)
    return PydanticCustomError(MANY_PROBLEMS, "{summary}", {"summary": summary, "problems": found})


@dataclass(frozen=True)
class Explainer:
    """Explains the validation errors of one root model, whose key names guide the messages.

    The root is a parameter, not an import, so that this module sits below daemon.config.
    """

    root: type[BaseModel]
    # Fields of the root that the loader sets: never YAML keys, never suggested.
    loader_fields: frozenset[str] = field(default_factory=frozenset)

    def lines(self, err: ValidationError, shown: str) -> list[str]:
        """One `<file>: <key.path>: <message>` line per distinct problem, in pydantic's order."""
        lines: list[str] = []
        for error in err.errors():
            for loc, message in self._split(error):
                key = _format_loc(loc)
                line = f"{shown}: {key}: {message}" if key else f"{shown}: {message}"
                if line not in lines:
                    lines.append(line)
        return lines

    def _split(self, error: ErrorDetails) -> Iterator[tuple[Loc, str]]:
        """Yield (clean key path, human message) pairs; one pydantic error may carry several."""
        if error["type"] == MANY_PROBLEMS:
            loc, _ = self._walk(error["loc"], keep_last=False)
            for sub_loc, message in error.get("ctx", {})["problems"]:
                yield (*loc, *sub_loc), message
            return
        if _only_counts_failed_items(error):
            return
        if error["type"] == "invalid_key":  # a YAML key that is not text, such as `3:`
            loc, _ = self._walk((*error["loc"][:-1], str(error["input"])), keep_last=True)
            yield loc, "unknown key"
            return
        keep_last = error["type"] == "extra_forbidden"
        loc, annotation = self._walk(error["loc"], keep_last=keep_last)
        yield loc, self._human_message(error, loc, annotation)

    def _human_message(self, error: ErrorDetails, loc: Loc, annotation: Any) -> str:
        kind = error["type"]
        ctx = error.get("ctx", {})
        if error["input"] is None and kind.endswith(("_type", "_parsing")):
            return "must not be empty"
        if kind == "extra_forbidden":
            return self._unknown_key_message(loc)
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

    def _unknown_key_message(self, loc: Loc) -> str:
        known = self._known_keys(loc[:-1])
        key = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
        return f"unknown key (known keys: {', '.join(known)})" if known else "unknown key"

    def _yaml_keys(self, model: type[BaseModel]) -> list[str]:
        return [name for name in model.model_fields if name not in self.loader_fields]

    def _known_keys(self, parent: Loc) -> list[str]:
        _, annotation = self._walk(parent, keep_last=False)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self._yaml_keys(annotation)
        return []

    def _walk(self, loc: tuple[str | int, ...], *, keep_last: bool) -> tuple[Loc, Any]:
        """Keep the loc segments that are YAML keys or list positions; drop pydantic's own tags.

        Returns the cleaned key path and the type annotation found at its end.
        """
        clean: list[str | int] = []
        current: Any = self.root
        for position, segment in enumerate(loc):
            current = _unwrap(current)
            is_model = isinstance(current, type) and issubclass(current, BaseModel)
            if is_model and isinstance(segment, str) and segment in self._yaml_keys(current):
                clean.append(segment)
                current = current.model_fields[segment].annotation
            elif isinstance(segment, int) and get_origin(current) is tuple:
                clean.append(segment)
                current = get_args(current)[0]
            elif isinstance(segment, str) and get_origin(current) is dict:
                clean.append(segment)  # a key of a mapping such as deployments: {cam3: ...}
                current = get_args(current)[1]
            elif keep_last and position == len(loc) - 1:
                clean.append(segment)
                current = None
        return tuple(clean), _unwrap(current)


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


def _plain_number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


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
