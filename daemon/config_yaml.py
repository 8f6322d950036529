"""Read a configuration file as YAML: safe loading, no key given twice, errors as one line."""

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from daemon.config_errors import ConfigError


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


def read_yaml(path: Path) -> object:
    """The file parsed safely; unreadable text or bad YAML is a ConfigError naming the file."""
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
