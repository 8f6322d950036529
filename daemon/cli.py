"""Command-line interface: parses arguments, turns errors into messages and exit codes."""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import __version__
from daemon.cli_common import (
    EXIT_CONFIG,
    EXIT_DATABASE,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_SOME_FAILED,
    add_config_option,
    dump_json,
)
from daemon.cli_common import load as _load
from daemon.cli_progress import track
from daemon.cli_staff import add_staff_commands
from daemon.config import Config, ConfigError, load_config
from daemon.logsetup import configure_logging

if TYPE_CHECKING:
    from daemon.storage.instance import InstanceLock


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tigerwatch", description="Sort camera-trap frames with CLIP zero-shot."
    )
    parser.add_argument("--version", action="version", version=f"tigerwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check-config", help="validate a configuration file")
    add_config_option(check)
    check.set_defaults(handler=_check_config)

    _add_classify_command(commands)
    _add_compare_command(commands)

    database = commands.add_parser("db", help="database maintenance")
    db_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser(
        "upgrade", help="create or migrate the database to the latest schema"
    )
    add_config_option(upgrade)
    upgrade.set_defaults(handler=_db_upgrade)

    run = commands.add_parser("run", help="run the daemon in the foreground until SIGTERM")
    add_config_option(run)
    run.set_defaults(handler=_run)

    _add_status_and_doctor_commands(commands)

    download = commands.add_parser(
        "download-model",
        help="on a connected machine: save a CLIP model into a folder to copy to a station",
    )
    download.add_argument("name", help="hub name, e.g. openai/clip-vit-base-patch32")
    download.add_argument("out", type=Path, help="folder to write")
    download.set_defaults(handler=_download_model)
    add_staff_commands(commands)
    return parser


def _add_classify_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    classify = commands.add_parser("classify", help="classify image files once and print results")
    add_config_option(classify)
    classify.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    classify.add_argument(
        "--plot",
        type=Path,
        metavar="OUT",
        help="write each image's probability bar chart as PNG into folder OUT "
        "(or to OUT itself when it ends in .png and one image is given)",
    )
    classify.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    classify.set_defaults(handler=_classify)


def _add_status_and_doctor_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    status = commands.add_parser("status", help="show the queue and today's totals")
    add_config_option(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
    doctor = commands.add_parser(
        "doctor", help="check the station's setup as the daemon's user meets it"
    )
    add_config_option(doctor)
    doctor.add_argument(
        "--unit", type=Path, default=None, metavar="FILE", help="the installed systemd unit"
    )
    doctor.set_defaults(handler=_doctor)


def _add_compare_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    compare = commands.add_parser(
        "compare-precision",
        help="re-classify N of the station's classified frames at every precision this CPU runs",
    )
    add_config_option(compare)
    compare.add_argument("--sample", type=int, default=200, metavar="N", help="frames (200)")
    compare.set_defaults(handler=_compare_precision)


def _compare_precision(args: argparse.Namespace) -> int:
    from daemon.classify.compare import compare_precisions, format_reports
    from daemon.classify.errors import ModelLoadError
    from daemon.storage.database import DatabaseError, open_migrated_database
    from daemon.storage.store import Store

    config = _load(args)
    try:
        engine = open_migrated_database(config.database.url)
        paths = [Path(p) for p in Store(engine).classified_final_paths(max(args.sample, 1))]
        engine.dispose()
        reports, failed = compare_precisions(config, paths, track=track)
    except DatabaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATABASE
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MODEL
    for outcome in failed:
        print(f"skipped {outcome.path}: {outcome.error}", file=sys.stderr)
    print(format_reports(reports))
    return EXIT_OK


def _check_config(args: argparse.Namespace) -> int:
    from daemon.classify.cpu_caps import configured_bf16_warning

    config = load_config(args.config)  # ConfigError is printed by main()
    warning = configured_bf16_warning(config.model.precision, config.model.device)
    if warning is not None:
        print(f"warning: {args.config}: {warning}", file=sys.stderr)
    print("ok")
    return EXIT_OK


def _classify(args: argparse.Namespace) -> int:
    from daemon.classify.classifier import load_for_config
    from daemon.classify.errors import ModelLoadError
    from daemon.classify.oneshot import classify_files
    from daemon.classify.output import print_json, print_text, write_plots

    config = _load(args)
    if args.plot is not None and args.plot.suffix.lower() == ".png" and len(args.images) > 1:
        print(
            f"error: --plot {args.plot}: a .png file holds one chart; "
            "give a folder for several images",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        classifier = load_for_config(config)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MODEL
    outcomes = list(
        track(classify_files(classifier, args.images, config), "classify", len(args.images))
    )
    if args.json:
        print_json(outcomes)
    else:
        print_text(outcomes)
    if args.plot is not None:
        write_plots(outcomes, args.plot, config)
    return EXIT_SOME_FAILED if any(outcome.error for outcome in outcomes) else EXIT_OK


def _db_upgrade(args: argparse.Namespace) -> int:
    from daemon.storage.database import DatabaseError, upgrade_database

    config = _load(args)
    try:
        upgrade_database(config.database.url)
    except DatabaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATABASE
    print(f"database at {config.database.url} is up to date")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    stop = _catch_signals()

    from daemon.storage.database import DatabaseError
    from daemon.storage.instance import lock_database

    config = _load(args)
    try:
        # Before the imports below (torch, seconds): a second daemon is refused at once.
        lock = lock_database(config.database.url)
    except DatabaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATABASE
    if _model_unobtainable(config, lock):
        return EXIT_MODEL
    if _stopped_during_prefetch(config, stop, lock):
        return EXIT_OK

    from daemon.classify.errors import ModelLoadError
    from daemon.delivery.permissions import OwnershipError
    from daemon.service import run_daemon

    try:
        return run_daemon(config, stop=stop, lock=lock)
    except OwnershipError as err:
        print(f"error: {args.config}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MODEL
    except DatabaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATABASE


def _catch_signals() -> threading.Event:
    """The event SIGTERM/SIGINT set, caught before the slow imports (torch, seconds): a stop
    asked for during start-up then ends the start-up cleanly instead of killing the process."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no reload; run_daemon logs that it is ignored
    # The tower's weights are the model file's mapped pages: that file truncated under the daemon
    # is a SIGBUS, which otherwise ends it without a word in its log.
    faulthandler.enable()
    return stop


def _stopped_during_prefetch(
    config: Config, stop: threading.Event, lock: InstanceLock | None
) -> bool:
    """Read the checkpoint before torch loads (the two memory peaks then do not add up); True
    when SIGTERM/SIGINT came meanwhile: the loader child is gone and nothing was taken yet."""
    from daemon.classify.loader_process import prefetch_for_config

    prefetch_for_config(config, stop)
    if not stop.is_set():
        return False
    if lock is not None:
        lock.release()
    return True


def _model_unobtainable(config: Config, lock: InstanceLock | None) -> bool:
    """Before torch and transformers load (seconds): a model neither on disk, nor cached, nor
    reachable fails at once with what to do (issue 14: an offline station is the normal case)."""
    from daemon.classify.model_source import unobtainable_reason

    problem = unobtainable_reason(config.model.name_or_path)
    if problem is None:
        return False
    if lock is not None:
        lock.release()
    print(f"error: {problem}", file=sys.stderr)
    return True


def _status(args: argparse.Namespace) -> int:
    from daemon.status import format_status, gather_status
    from daemon.storage.database import DatabaseError, open_migrated_database
    from daemon.storage.store import Store

    config = _load(args)
    try:
        engine = open_migrated_database(config.database.url)
    except DatabaseError as err:
        print(f"error: {err}; run `tigerwatch db upgrade -c {args.config}`", file=sys.stderr)
        return EXIT_DATABASE
    try:
        report = gather_status(
            Store(engine),
            stall_seconds=config.watch.stall_seconds,
            inboxes=tuple(inbox.path for inbox in config.paths.inbox),
        )
    finally:
        engine.dispose()
    print(dump_json(report.as_dict()) if args.json else format_status(report))
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from daemon.doctor.checks import DEFAULT_UNIT, station_findings
    from daemon.doctor.verdicts import exit_code

    findings = []
    for finding in station_findings(load_config(args.config), args.unit or DEFAULT_UNIT):
        print(finding.line(), flush=True)  # one line as each check ends: some take a while
        findings.append(finding)
    return exit_code(findings)


def _download_model(args: argparse.Namespace) -> int:
    from daemon.classify.loading import ModelLoadError, download_model

    configure_logging("INFO")
    try:
        download_model(args.name, args.out)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MODEL
    print(f"saved {args.name} into {args.out}; set model.name_or_path: {args.out.resolve()}")
    return EXIT_OK
