"""The staff commands of the CLI: verdict, evaluate, calibrate, audit, adapt and rescore."""

from __future__ import annotations

import argparse
import csv
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.cli_common import (
    EXIT_CONFIG,
    EXIT_DATABASE,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_SOME_FAILED,
    add_config_option,
    dump_json,
    load,
)
from daemon.cli_progress import track
from daemon.config import Config

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from daemon.classify.classifier import ClipClassifier
    from daemon.staff.rescore import Scoring
    from daemon.storage.rescores import Rescores
    from daemon.storage.staff import StaffStore
    from daemon.storage.store import Store


def add_staff_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    _add_verdict_command(commands)
    evaluate = commands.add_parser("evaluate", help="precision and recall from the verdicts")
    add_config_option(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--plot", type=Path, metavar="OUT.png", help="PR curve + histograms")
    evaluate.set_defaults(handler=_evaluate)

    calibrate = commands.add_parser("calibrate", help="thresholds reaching a target recall")
    add_config_option(calibrate)
    calibrate.add_argument("--target-recall", type=float, default=0.95)
    calibrate.add_argument("--min-verdicts", type=int, default=20)
    calibrate.set_defaults(handler=_calibrate)

    audit = commands.add_parser("audit", help="link a random sample of archived frames to review")
    add_config_option(audit)
    audit.add_argument("--sample", type=int, required=True, metavar="N")
    audit.add_argument("--seed", type=int, default=None, metavar="S")
    audit.set_defaults(handler=_audit)

    adapt = commands.add_parser("adapt", help="train a linear head on the verdicts")
    add_config_option(adapt)
    adapt.add_argument("--target-recall", type=float, default=0.95)
    adapt.add_argument("--min-verdicts", type=int, default=10)
    adapt.add_argument("--force", action="store_true", help="save even when not better")
    adapt.set_defaults(handler=_adapt)

    rescore = commands.add_parser("rescore", help="decide again from the stored embeddings")
    add_config_option(rescore)
    rescore.add_argument("--json", action="store_true", help="print JSON")
    rescore.add_argument(
        "--apply",
        action="store_true",
        help="record the new decisions and move the frames (the daemon must be stopped)",
    )
    rescore.set_defaults(handler=_rescore)


def _add_verdict_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    verdict = commands.add_parser("verdict", help="record staff verdicts on frames")
    add_config_option(verdict)
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

    config = load(args)
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

    config = load(args)
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

    config = load(args)
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

    config = load(args)
    if args.sample < 1:
        print("error: --sample must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    store = _staff_store(config, args.config)
    if store is None:
        return EXIT_DATABASE
    result = draw_audit(store, config.paths.review, args.sample, seed=args.seed, track=track)
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

    config = load(args)
    store = _staff_store(config, args.config)
    if store is None:
        return EXIT_DATABASE
    judged = store.judged_embeddings()
    positive = config.decision.positive_threshold
    try:
        comparison = cross_validate(
            judged, positive, args.target_recall, args.min_verdicts, track=track
        )
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


def _rescore(args: argparse.Namespace) -> int:
    from daemon.storage.database import DatabaseError
    from daemon.storage.instance import lock_database

    config = load(args)
    try:
        # --apply moves filed frames: it runs alone, and no daemon can start meanwhile.
        lock = lock_database(config.database.url) if args.apply else None
    except DatabaseError as err:
        print(
            f"error: {err}; rescore --apply moves filed frames, so it runs only while the "
            "daemon is stopped: stop it (systemctl stop tigerwatch), run rescore --apply, "
            "then start it again",
            file=sys.stderr,
        )
        return EXIT_DATABASE
    try:
        return _rescore_unlocked(args, config)
    finally:
        if lock is not None:
            lock.release()


def _rescore_unlocked(args: argparse.Namespace, config: Config) -> int:
    from daemon.classify.classifier import load_for_config
    from daemon.classify.errors import ModelLoadError
    from daemon.storage.database import DatabaseError, open_migrated_database
    from daemon.storage.rescores import Rescores
    from daemon.storage.staff import StaffStore
    from daemon.storage.store import Store

    try:
        engine = open_migrated_database(config.database.url)
    except DatabaseError as err:
        print(f"error: {err}; run `tigerwatch db upgrade -c {args.config}`", file=sys.stderr)
        return EXIT_DATABASE
    try:
        classifier = load_for_config(config)  # the text embeddings of the current prompts
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_MODEL
    scoring = _scoring(config, classifier, StaffStore(engine))
    store = Store(engine) if args.apply else None
    return _rescore_with(args, config, scoring, Rescores(engine), store)


def _rescore_with(
    args: argparse.Namespace,
    config: Config,
    scoring: Scoring,
    rescores: Rescores,
    store: Store | None,
) -> int:
    """Plan; apply with `store` (None: report only); print."""
    from daemon.delivery.permissions import Ownership
    from daemon.staff.rescore import plan_rescore
    from daemon.staff.rescore_apply import apply_rescore
    from daemon.staff.rescore_report import format_report

    frames = rescores.frames()
    event_ids = sorted({f.event_id for f in frames if f.event_id is not None})
    events = {event.id: event.decision for event in rescores.events(event_ids).values()}
    plan = plan_rescore(frames, events, scoring, track=track)
    applied = None
    if store is not None:
        ownership = Ownership(group_id=config.files.group, file_mode=config.files.mode)
        applied = apply_rescore(plan, rescores, store, config.paths, ownership)
    if args.json:
        print(dump_json({**plan.as_dict(), "applied": applied and applied.as_dict()}))
    else:
        print(format_report(plan, scoring.head, applied))
    return EXIT_SOME_FAILED if applied is not None and applied.failed else EXIT_OK


def _scoring(config: Config, classifier: ClipClassifier, store: StaffStore) -> Scoring:
    from daemon.staff.head_choice import configured_head
    from daemon.staff.rescore import Scoring

    def zero_shot(
        vectors: npt.NDArray[np.float32], lights: Sequence[bool]
    ) -> list[tuple[float, dict[str, float]]]:
        scores = classifier.score_embeddings(vectors, lights)
        return [(score.target_score, score.probabilities) for score in scores]

    labels: list[dict[str, object]] = [
        {"text": text, "target": target}
        for text, target in zip(classifier.labels, classifier.targets, strict=True)
    ]
    head = configured_head(store, config.model.head, classifier.model_name)
    return Scoring(classifier.model_name, zero_shot, config.decision, head, labels)
