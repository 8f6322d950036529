"""What every CLI command shares: exit codes, the -c option, loading the config, JSON output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from daemon.config import Config, load_config
from daemon.logsetup import configure_logging

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_CONFIG = 2
EXIT_MODEL = 3
EXIT_DATABASE = 4


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, required=True, metavar="FILE", help="YAML configuration"
    )


def load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    configure_logging(config.logging.level)
    return config


def dump_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
