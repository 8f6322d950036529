"""Command-line interface: parses arguments, turns errors into messages and exit codes."""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import __version__
from daemon.config import Config, ConfigError, load_config
from daemon.logsetup import configure_logging

if TYPE_CHECKING:
    from daemon.storage.staff import StaffStore

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_CONFIG = 2
EXIT_MODEL = 3
EXIT_DATABASE = 4


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
    _add_config_option(check)
    check.set_defaults(handler=_check_config)

    _add_classify_command(commands)
    _add_compare_command(commands)

    database = commands.add_parser("db", help="database maintenance")
    db_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser(
        "upgrade", help="create or migrate the database to the latest schema"
    )
    _add_config_option(upgrade)
    upgrade.set_defaults(handler=_db_upgrade)

    run = commands.add_parser("run", help="run the daemon in the foreground until SIGTERM")
    _add_config_option(run)
    run.set_defaults(handler=_run)

    _add_status_and_doctor_commands(commands)

    download = commands.add_parser(
        "download-model",
        help="on a connected machine: save a CLIP model into a folder to copy to a station",
    )
    download.add_argument("name", help="hub name, e.g. openai/clip-vit-base-patch32")
    download.add_argument("out", type=Path, help="folder to write")
    download.set_defaults(handler=_download_model)
    _add_staff_commands(commands)
    return parser


def _add_staff_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    _add_verdict_command(commands)
    evaluate = commands.add_parser("evaluate", help="precision and recall from the verdicts")
    _add_config_option(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--plot", type=Path, metavar="OUT.png", help="PR curve + histograms")
    evaluate.set_defaults(handler=_evaluate)

    calibrate = commands.add_parser("calibrate", help="thresholds reaching a target recall")
    _add_config_option(calibrate)
    calibrate.add_argument("--target-recall", type=float, default=0.95)
    calibrate.add_argument("--min-verdicts", type=int, default=20)
    calibrate.set_defaults(handler=_calibrate)

    audit = commands.add_parser("audit", help="link a random sample of archived frames to review")
    _add_config_option(audit)
    audit.add_argument("--sample", type=int, required=True, metavar="N")
    audit.add_argument("--seed", type=int, default=None, metavar="S")
    audit.set_defaults(handler=_audit)

    adapt = commands.add_parser("adapt", help="train a linear head on the verdicts")
    _add_config_option(adapt)
    adapt.add_argument("--target-recall", type=float, default=0.95)
    adapt.add_argument("--min-verdicts", type=int, default=10)
    adapt.add_argument("--force", action="store_true", help="save even when not better")
    adapt.set_defaults(handler=_adapt)


def _add_verdict_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    verdict = commands.add_parser("verdict", help="record staff verdicts on frames")
    _add_config_option(verdict)
    which = verdict.add_mutually_exclusive_group(required=True)
    which.add_argument("--tiger", dest="verdict", action="store_const", const="tiger")
    which.add_argument("--not-tiger", dest="verdict", action="store_const", const="not-tiger")
    which.add_argument(
        "--import",
        dest="csv",
        type=Path,
        metavar="FILE.csv",
        help="CSV with columns path or sha256, and verdict",
    )
    verdict.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    verdict.set_defaults(handler=_verdict)


def _add_classify_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    classify = commands.add_parser("classify", help="classify image files once and print results")
    _add_config_option(classify)
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
    _add_config_option(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
    doctor = commands.add_parser(
        "doctor", help="check the station's setup as the daemon's user meets it"
    )
    _add_config_option(doctor)
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
    _add_config_option(compare)
    compare.add_argument("--sample", type=int, default=200, metavar="N", help="frames (200)")
    compare.set_defaults(handler=_compare_precision)


def _compare_precision(args: argparse.Namespace) -> int:
    from daemon.classify.compare import compare_precisions, format_reports
    from daemon.classify.loading import ModelLoadError
    from daemon.storage.database import DatabaseError, open_migrated_database
    from daemon.storage.store import Store

    config = _load(args)
    try:
        engine = open_migrated_database(config.database.url)
        paths = [Path(p) for p in Store(engine).classified_final_paths(max(args.sample, 1))]
        engine.dispose()
        reports, failed = compare_precisions(config, paths)
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


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, required=True, metavar="FILE", help="YAML configuration"
    )


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    configure_logging(config.logging.level)
    return config


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
    from daemon.classify.loading import ModelLoadError
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
    outcomes = list(classify_files(classifier, args.images, config))
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
    # Catch SIGTERM/SIGINT before the imports below, which take seconds (torch): a stop asked
    # for during start-up then ends the start-up cleanly instead of killing the process.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no reload; run_daemon logs that it is ignored

    from daemon.storage.database import DatabaseError
    from daemon.storage.instance import lock_database

    config = _load(args)
    try:
        # Before the imports below (torch, seconds): a second daemon is refused at once.
        lock = lock_database(config.database.url)
    except DatabaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DATABASE

    from daemon.classify.loading import ModelLoadError
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


def _staff_store(config: Config, config_path: Path) -> StaffStore | None:
    from daemon.storage.database import DatabaseError, open_migrated_database
    from daemon.storage.staff import StaffStore

    try:
        return StaffStore(open_migrated_database(config.database.url))
    except DatabaseError as err:
        print(f"error: {err}; run `tigerwatch db upgrade -c {config_path}`", file=sys.stderr)
        return None


def _verdict(args: argparse.Namespace) -> int:
    from daemon.staff.verdicts import import_csv, verdicts_for_paths
    from daemon.storage.schema import VerdictValue

    config = _load(args)
    if (args.csv is None) == (not args.paths):
        print(
            "error: give PATH... with --tiger/--not-tiger, or --import FILE.csv alone",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    store = _staff_store(config, args.config)
    if store is None:
        return EXIT_DATABASE
    who = getpass.getuser()
    if args.csv is not None:
        try:
            outcome = import_csv(store, args.csv, who)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            print(f"error: {args.csv}: {err}", file=sys.stderr)
            return EXIT_SOME_FAILED
    else:
        outcome = verdicts_for_paths(store, args.paths, VerdictValue(args.verdict), who)
    for problem in outcome.problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"recorded {outcome.recorded} verdicts")
    return EXIT_SOME_FAILED if outcome.problems else EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from daemon.staff.evaluate import TooFewVerdicts, archive_estimate, evaluate_frames
    from daemon.staff.report import format_report, plot_evaluation

    config = _load(args)
    store = _staff_store(config, args.config)
    if store is None:
        return EXIT_DATABASE
    thresholds = (config.decision.positive_threshold, config.decision.uncertain_threshold)
    frames = store.scored_frames()
    try:
        groups = evaluate_frames(frames, store.split_columns(), *thresholds)
    except TooFewVerdicts as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SOME_FAILED
    estimate = archive_estimate(store.audited_frames())
    if args.json:
        report = {
            "thresholds": {"positive": thresholds[0], "uncertain": thresholds[1]},
            "groups": [group.as_dict() for group in groups],
            "archive": estimate.as_dict() if estimate else None,
        }
        print(dump_json(report))
    else:
        print(format_report(groups, estimate, thresholds))
    if args.plot is not None:
        judged = [(f.score, bool(f.is_tiger)) for f in frames if f.is_tiger is not None]
        plot_evaluation(judged, thresholds, args.plot)
    return EXIT_OK


def _calibrate(args: argparse.Namespace) -> int:
    from daemon.staff.calibrate import calibrate, calibrate_per_light, config_snippet
    from daemon.staff.evaluate import TooFewVerdicts

    config = _load(args)
    if not 0 < args.target_recall <= 1:
        print("error: --target-recall must be in (0, 1]", file=sys.stderr)
        return EXIT_CONFIG
    store = _staff_store(config, args.config)
    if store is None:
        return EXIT_DATABASE
    frames = store.scored_frames()
    try:
        overall = calibrate(frames, args.target_recall, args.min_verdicts)
    except TooFewVerdicts as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SOME_FAILED
    per_light = (
        calibrate_per_light(frames, args.target_recall, args.min_verdicts)
        if "infrared" in store.split_columns()
        else []
    )
    print(config_snippet(overall, config.decision.positive_threshold, per_light))
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    from daemon.staff.audit import draw_audit

    config = _load(args)
    if args.sample < 1:
        print("error: --sample must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    store = _staff_store(config, args.config)
    if store is None:
        return EXIT_DATABASE
    result = draw_audit(store, config.paths.review, args.sample, seed=args.seed)
    for problem in result.problems:
        print(f"error: {problem}", file=sys.stderr)
    print(
        f"linked {result.linked} of {result.population} archived and uncertain frames "
        f"into {result.folder}; judge them with the verdict folders or `tigerwatch verdict`"
    )
    return EXIT_SOME_FAILED if result.problems else EXIT_OK


def _adapt(args: argparse.Namespace) -> int:
    from daemon.staff.adapt import cross_validate, format_comparison, train_head
    from daemon.staff.evaluate import TooFewVerdicts

    config = _load(args)
    store = _staff_store(config, args.config)
    if store is None:
        return EXIT_DATABASE
    judged = store.judged_embeddings()
    positive = config.decision.positive_threshold
    try:
        comparison = cross_validate(judged, positive, args.target_recall, args.min_verdicts)
    except TooFewVerdicts as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(format_comparison(comparison, args.target_recall))
    if not (comparison.head_is_better or args.force):
        print("not saved: the head is no better than zero-shot at the target recall (--force)")
        return EXIT_OK
    head_id = store.save_head(train_head(judged, comparison))
    print(f"saved head {head_id}; set model.head: latest (or {head_id}) and restart the daemon")
    return EXIT_OK


def dump_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
