"""Runs the daemon: start-up in a safe order, supervision, and a clean stop on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from daemon.classify.classifier import ClipClassifier, load_for_config
from daemon.classify.lanes import ModelLanes, plan_lanes
from daemon.config import Config
from daemon.config_deployments import utc_offset
from daemon.decode.pool import DecoderPool
from daemon.delivery.move_retries import MoveRetries
from daemon.delivery.permissions import Ownership
from daemon.delivery.router import Router, RoutingLoop
from daemon.delivery.setaside import EntryFailures
from daemon.heads import LinearHead
from daemon.intake.arrivals import Intake
from daemon.intake.loop import intake_loop
from daemon.intake.names import NameFilter
from daemon.intake.stability import StabilityTracker
from daemon.intake.watcher import InboxWatcher, WatchedInbox
from daemon.malloc import limit_malloc_arenas
from daemon.notify import SystemdNotifier
from daemon.progress import ProgressWatch
from daemon.schedule import start_wall_clock_jobs
from daemon.staff.folder_verdicts import FolderVerdicts
from daemon.staff.folders import VerdictFolders, verdict_folders
from daemon.staff.head_choice import configured_head
from daemon.storage.database import create_db_engine
from daemon.storage.events import Clock, EventSettings
from daemon.storage.instance import InstanceLock, lock_database
from daemon.storage.migration_process import migrate_to_head
from daemon.storage.staff import StaffStore
from daemon.storage.store import Store
from daemon.worker import Worker

logger = logging.getLogger(__name__)

# How often the verdict folders are looked at.
_VERDICT_TICK_SECONDS = 0.25


@dataclass
class _Threads:
    stop: threading.Event = field(default_factory=threading.Event)
    wake_worker: threading.Event = field(default_factory=threading.Event)
    wake_intake: threading.Event = field(default_factory=threading.Event)
    started: list[threading.Thread] = field(default_factory=list)

    def start(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=_logged(name, target, self.stop), name=name, daemon=True)
        thread.start()
        self.started.append(thread)

    def one_died(self) -> bool:
        """A thread ended though no stop was asked for. The stop is looked at after the
        threads: one that ended on a stop ended after the stop was set, so a SIGTERM that
        lands as the health check wakes is never taken for a death."""
        ended = not all(thread.is_alive() for thread in self.started)
        return ended and not self.stop.is_set()

    def stop_all(self) -> None:
        self.stop.set()
        self.wake_worker.set()
        self.wake_intake.set()
        for thread in self.started:
            thread.join(timeout=60)


@dataclass
class _Parts:
    """Everything the daemon runs, built in start-up order."""

    classifier: ClipClassifier
    decoder: DecoderPool
    intake: Intake
    watcher: InboxWatcher
    worker: Worker
    routing: RoutingLoop
    verdicts: VerdictFolders
    recorder: FolderVerdicts


def run_daemon(
    config: Config, *, stop: threading.Event | None = None, lock: InstanceLock | None = None
) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set); returns the process exit code.

    `lock` is the database's lock when the caller has taken it already (the CLI does, before
    its slow imports); it is released when the daemon ends.
    """
    limit_malloc_arenas()  # before the daemon's threads start
    threads = _Threads(stop=stop or threading.Event())
    received = _install_signal_handlers(threads.stop)
    if lock is None:
        lock = lock_database(config.database.url)  # before anything touches the database
    notifier = SystemdNotifier(os.environ)
    try:
        ownership = Ownership(group_id=config.files.group, file_mode=config.files.mode)
        ownership.check_applicable(config.paths.destinations.values())
        return _run(config, threads, _Stop(received, notifier), ownership, lock)
    finally:
        notifier.close()
        if lock is not None:
            lock.release()


@dataclass
class _Stop:
    """Announces a stop from the main thread: the signal handler only sets an event."""

    received: list[str]
    notifier: SystemdNotifier

    def announce(self) -> None:
        if self.received:
            logger.info(
                "received %s: stopping; frames being classified stay queued for the next start",
                self.received[0],
            )
        self.notifier.stopping()


def _run(
    config: Config,
    threads: _Threads,
    stopping: _Stop,
    ownership: Ownership,
    lock: InstanceLock | None,
) -> int:
    started = time.monotonic()
    parts = _build(config, threads, ownership, lock)
    if threads.stop.is_set():  # asked to stop while starting up: nothing has been taken yet
        stopping.announce()
        parts.decoder.close()
        logger.info("stopped during start-up")
        return 0
    try:
        parts.watcher.start()
        parts.intake.rescan()  # files that arrived while the daemon was down
        rescan_every = config.watch.rescan_interval_seconds
        threads.start("intake", lambda: intake_loop(parts.intake, threads.stop, rescan_every))
        threads.start("worker", parts.worker.run)
        threads.start("routing", parts.routing.run)
        _start_verdict_folders(config, parts, threads)
        stopping.notifier.ready(f"watching {len(config.paths.inbox)} inbox(es)")
        _log_ready(config, parts.classifier, time.monotonic() - started)
        wall_clock_jobs = start_wall_clock_jobs(config)
        try:
            code = _supervise(config, threads, parts, stopping.notifier, lock)
        finally:
            stopping.announce()
            if wall_clock_jobs is not None:
                wall_clock_jobs.shutdown(wait=True)  # a backup under way is finished, not cut
            parts.watcher.stop()
            threads.stop_all()
            parts.verdicts.stop()  # after its loop has ended: that loop restarts a dead watch
    finally:
        parts.decoder.close()
    logger.info("stopped")
    return code


def _build(
    config: Config, threads: _Threads, ownership: Ownership, lock: InstanceLock | None
) -> _Parts:
    """Migrate, load the model, settle interrupted moves, and wire the parts together."""
    migrate_to_head(config.database.url)  # Alembic, when needed, only in a child
    if lock is not None:
        lock.note_database_opened()
    store = Store(create_db_engine(config.database.url), events=_event_settings(config))
    classifier = load_for_config(config)
    router = _build_router(config, store, ownership)
    _settle(router)
    intake, watcher = _build_intake(config, store, threads)
    router.on_released = intake.hint  # a name freed by a move may hold a newer upload
    decoder = DecoderPool(
        config.worker.decode_processes,
        timeout=config.worker.decode_timeout_seconds,
        pixel_budget=config.worker.decode_pixel_budget,
    )
    routing = RoutingLoop(
        router, retry_seconds=config.worker.destination_retry_seconds, stop=threads.stop
    )
    worker = Worker(
        store=store,
        classifier=classifier,
        routing=routing,
        decoder=decoder,
        lanes=_model_lanes(config, classifier),
        config=config,
        stop=threads.stop,
        wake=threads.wake_worker,
        on_content_changed=intake.hint,
        head=_load_head(config, classifier.model_name),
        quieting=intake.tracker,
    )
    return _Parts(classifier, decoder, intake, watcher, worker, routing, *_verdicts(config))


def _build_router(config: Config, store: Store, ownership: Ownership) -> Router:
    """The router, with one backoff for inbox entries and one for filed frames it refiles."""
    retry = config.worker.destination_retry_seconds
    attempts = config.worker.max_move_attempts
    failures = EntryFailures(store, first_delay=retry, max_attempts=attempts)
    refile_retries = MoveRetries(first_delay=retry, max_attempts=attempts)
    return Router(store, config.paths, ownership, failures, refile_retries)


def _settle(router: Router) -> None:
    """Finish the moves a crash left half-done, before any new work is taken."""
    router.route_pending()
    if refiled := router.settle_refiles():
        logger.info("settled %d interrupted move(s) of filed frames", refiled)
    if returned := router.return_leftover_claims():
        logger.info("returned %d claimed file(s) to the inbox as new arrivals", returned)


def _event_settings(config: Config) -> EventSettings:
    """The events' gap and each configured deployment's clock, as the store needs them."""
    clocks = {
        key: Clock(
            offset_seconds=deployment.clock_offset_seconds,
            utc_offset=None if deployment.timezone is None else utc_offset(deployment.timezone),
        )
        for key, deployment in config.deployments.items()
    }
    return EventSettings(gap_seconds=config.events.gap_seconds, clocks=clocks)


def _load_head(config: Config, model_name: str) -> LinearHead | None:
    """The head `model.head` names; a missing or mismatched one is logged, zero-shot decides."""
    if config.model.head == "none":
        return None
    engine = create_db_engine(config.database.url)
    try:
        return configured_head(StaffStore(engine), config.model.head, model_name)
    finally:
        engine.dispose()


def _model_lanes(config: Config, classifier: ClipClassifier) -> ModelLanes:
    model = config.model
    plan = plan_lanes(model.threads, model.parallel_batches, on_gpu=classifier.on_gpu)
    if plan.adjusted is not None:
        logger.warning("%s: the model runs %d batch(es) at once instead", plan.adjusted, plan.lanes)
    logger.info(
        "the model runs %d batch(es) at once, %d thread(s) each",
        plan.lanes,
        plan.threads_per_lane,
    )
    return ModelLanes(plan)


def _build_intake(config: Config, store: Store, threads: _Threads) -> tuple[Intake, InboxWatcher]:
    """The intake and the watcher that feeds it hints, sharing one name filter."""
    name_filter = NameFilter(config.images.extensions, config.watch.ignore_patterns)
    intake = Intake(
        store=store,
        tracker=StabilityTracker(
            config.watch.quiet_seconds,
            incomplete_grace_seconds=config.watch.incomplete_grace_seconds,
            on_first_look=threads.wake_worker.set,  # files to work on ahead
        ),
        name_filter=name_filter,
        inboxes=[inbox.path for inbox in config.paths.inbox],
        on_queued=threads.wake_worker.set,
        wake=threads.wake_intake,
        max_file_bytes=config.images.max_file_bytes,
        deployments=config.deployments_from,
    )
    watcher = InboxWatcher(
        [WatchedInbox(inbox.path, inbox.polling) for inbox in config.paths.inbox],
        intake.hint,
        name_filter,
        on_write_state=intake.hint,
    )
    return intake, watcher


def _log_ready(config: Config, classifier: ClipClassifier, seconds: float) -> None:
    logger.info(
        "ready in %.1f s: station %s, model %s (%s), watching %s",
        seconds,
        config.station,
        classifier.model_name,
        classifier.precision,
        ", ".join(str(inbox.path) for inbox in config.paths.inbox),
    )


def _supervise(
    config: Config,
    threads: _Threads,
    parts: _Parts,
    notifier: SystemdNotifier,
    lock: InstanceLock | None,
) -> int:
    """Send WATCHDOG=1 only after checking that every part is alive and the queue moves.

    Returns the exit code: 0 when asked to stop, or _files_changed's.
    """
    interval = config.watch.health_check_seconds
    progress = ProgressWatch(
        parts.worker.store, config.watch.stall_seconds, tries=parts.routing.tries
    )
    while not threads.stop.wait(timeout=interval):
        if (code := _files_changed(lock, parts.classifier)) is not None:
            threads.stop.set()
            return code
        notifier.resend_ready()  # a READY=1 lost at start-up (full socket) is sent again
        for problem in parts.watcher.check_health():
            logger.warning("watcher: %s", problem)
        if threads.one_died():
            logger.critical("a daemon thread died; stopping so systemd restarts the service")
            raise SystemExit(1)
        if progress.check() is not None:
            continue  # work waits and nothing finishes: no ping (ProgressWatch logged why)
        notifier.watchdog()
    return 0


# The CLI's exit code for a database problem (cli.EXIT_DATABASE), which sits above this module.
EXIT_DATABASE_LOST = 4
# And for a model problem (cli.EXIT_MODEL): the weights file changed under the daemon.
EXIT_MODEL_CHANGED = 3


def _files_changed(lock: InstanceLock | None, classifier: ClipClassifier) -> int | None:
    """The exit code when a file the daemon holds open changed under it, after saying so.

    EXIT_DATABASE_LOST: the database file was deleted or replaced (writes would go to a file
    nobody can see). EXIT_MODEL_CHANGED: the mapped weights file changed; the restart loads
    it as it is now, and records its revision.
    """
    if lock is not None and (change := lock.database_changed()) is not None:
        logger.critical(
            "database file %s %s while the daemon ran; stopping new work and exiting with code %d",
            lock.database,
            change,
            EXIT_DATABASE_LOST,
        )
        return EXIT_DATABASE_LOST
    if (change := _weights_change(classifier)) is not None:
        logger.critical(
            "model weights %s; stopping new work and exiting with code %d so that the "
            "daemon starts again on the file as it is now",
            change,
            EXIT_MODEL_CHANGED,
        )
        return EXIT_MODEL_CHANGED
    return None


def _weights_change(classifier: ClipClassifier) -> str | None:
    """The mapped weights file changed since loading: results would come from other weights
    than the recorded revision names (rewritten in place), or stay on the old ones (replaced)."""
    weights = classifier.weights
    if weights is None:
        return None
    change = weights.changed()
    return None if change is None else f"file {weights.path} {change} while the daemon ran"


def _verdicts(config: Config) -> tuple[VerdictFolders, FolderVerdicts]:
    """The verdict folders' finder and the recorder of what it finds (see daemon/staff/)."""
    folders = VerdictFolders(
        config.paths.review,
        verdict_folders(config.paths.review, config.verdicts),
        NameFilter(config.images.extensions, config.watch.ignore_patterns),
    )
    return folders, FolderVerdicts(StaffStore(create_db_engine(config.database.url)))


def _start_verdict_folders(config: Config, parts: _Parts, threads: _Threads) -> None:
    parts.verdicts.start()
    every = config.verdicts.rescan_seconds
    threads.start(
        "verdicts", lambda: _verdict_loop(parts.verdicts, parts.recorder, threads.stop, every)
    )


def _verdict_loop(
    folders: VerdictFolders, recorder: FolderVerdicts, stop: threading.Event, every: float
) -> None:
    # Scanned at once (verdicts given while the daemon was down), then on the monotonic clock.
    next_scan = time.monotonic()
    while not stop.wait(timeout=_VERDICT_TICK_SECONDS):
        sightings = folders.take()
        if time.monotonic() >= next_scan:
            folders.keep_watching()
            sightings += list(folders.scan())
            recorder.forget()
            next_scan = time.monotonic() + every
        for sighting in sightings:
            if stop.is_set():
                return
            try:
                recorder.record(sighting)
            except Exception:  # one file's trouble (or a locked database): retried next scan
                logger.exception("verdict folder: %s could not be recorded", sighting.path)


def _install_signal_handlers(stop: threading.Event) -> list[str]:
    """SIGTERM/SIGINT set `stop`; returns the list the handler notes the signal's name in.

    No I/O in the handler: it runs between two bytecodes of the main thread, which may be in
    the middle of a log write or a send; logging and STOPPING=1 happen in the main thread.
    """
    received: list[str] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        # There is no reload: SIGHUP (a closed terminal, a stray `kill -HUP`) must not kill the
        # daemon silently, as its default action does. Ignored by the kernel, so no handler runs.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        logger.info("SIGHUP is ignored (no reload): restart the daemon to apply a new config")
    return received


def _logged(name: str, target: Callable[[], None], stop: threading.Event) -> Callable[[], None]:
    def run() -> None:
        try:
            target()
        except Exception:
            logger.exception("%s thread failed", name)
            raise

    return run
