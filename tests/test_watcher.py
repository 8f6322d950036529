"""Tests for daemon.intake.watcher: real watchdog observers on real folders, waiting by polling."""

from __future__ import annotations

import errno
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers import Observer

import daemon.intake.watcher as watcher_module
from daemon.intake.names import NameFilter
from daemon.intake.stability import Hint
from daemon.intake.watcher import InboxWatcher, WatchedInbox
from tests.daemon_support import returns_within

TIMEOUT = 10.0
POLL = 0.1


def wait_for(predicate: Callable[[], object], timeout: float = TIMEOUT) -> None:
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(0.02)


class HintRecorder:
    """The on_hint callback: records every hinted path, from any watchdog thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: list[Path] = []

    def __call__(self, path: Path) -> None:
        with self._lock:
            self._paths.append(path)

    @property
    def paths(self) -> list[Path]:
        with self._lock:
            return list(self._paths)

    def saw(self, path: Path) -> bool:
        return path in self.paths

    def covers(self, path: Path) -> bool:
        """True when `path` itself or a folder above it was hinted."""
        return any(hinted == path or hinted in path.parents for hinted in self.paths)


@pytest.fixture
def name_filter() -> NameFilter:
    return NameFilter([".jpg", ".jpeg"])


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


@pytest.fixture
def make_watcher(name_filter: NameFilter) -> Iterator[Callable[..., InboxWatcher]]:
    """Build and start watchers; every one is stopped after the test, even on failure."""
    started: list[InboxWatcher] = []

    def build(
        inboxes: list[WatchedInbox], on_hint: Callable[[Path], None], **kwargs: Any
    ) -> InboxWatcher:
        watcher = InboxWatcher(inboxes, on_hint, name_filter, poll_interval=POLL, **kwargs)
        watcher.start()
        started.append(watcher)
        return watcher

    yield build
    for watcher in started:
        watcher.stop()


def copy_in(destination: Path, data: bytes = b"\xff\xd8\xff\xe0frame") -> None:
    """What `cp` does: open, write, close in place."""
    with destination.open("wb") as stream:
        stream.write(data)


def test_start_hints_the_inbox_root_for_a_first_scan(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints = HintRecorder()
    watcher = make_watcher([WatchedInbox(inbox)], hints)

    assert hints.paths == [inbox]
    assert watcher.is_healthy()
    assert watcher.check_health() == []


def test_cp_style_write_is_hinted(inbox: Path, make_watcher: Callable[..., InboxWatcher]) -> None:
    hints = HintRecorder()
    make_watcher([WatchedInbox(inbox)], hints)
    copy_in(inbox / "IMG_0001.JPG")

    wait_for(lambda: hints.saw(inbox / "IMG_0001.JPG"))


def test_mv_from_outside_is_hinted(
    inbox: Path, outside: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints = HintRecorder()
    make_watcher([WatchedInbox(inbox)], hints)
    copy_in(outside / "IMG_0002.JPG")
    (outside / "IMG_0002.JPG").rename(inbox / "IMG_0002.JPG")

    wait_for(lambda: hints.saw(inbox / "IMG_0002.JPG"))


def test_pure_ftpd_temp_then_rename_hints_only_the_final_name(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints = HintRecorder()
    make_watcher([WatchedInbox(inbox)], hints)
    temporary = inbox / ".pureftpd-upload.5f3a2b1c.JPG"
    copy_in(temporary)
    temporary.rename(inbox / "IMG_0003.JPG")

    wait_for(lambda: hints.saw(inbox / "IMG_0003.JPG"))
    # Events arrive in order, so the temp file's events were all handled by now.
    assert temporary not in hints.paths
    assert all(not path.name.startswith(".") for path in hints.paths)


def test_junk_and_other_extensions_are_not_hinted(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints = HintRecorder()
    make_watcher([WatchedInbox(inbox)], hints)
    copy_in(inbox / "Thumbs.db")
    copy_in(inbox / "notes.txt")
    (inbox / "@eaDir").mkdir()
    copy_in(inbox / "@eaDir" / "SYNOPHOTO_THUMB_XL.jpg")
    copy_in(inbox / "IMG_0004.JPG")  # written last: once seen, the others were handled

    wait_for(lambda: hints.saw(inbox / "IMG_0004.JPG"))
    assert set(hints.paths) == {inbox, inbox / "IMG_0004.JPG"}


def test_dcim_tree_moved_in_at_once_is_covered(
    inbox: Path, outside: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    tree = outside / "DCIM"
    files = [
        tree / "100RECNX" / "RCNX0001.JPG",
        tree / "100RECNX" / "RCNX0002.JPG",
        tree / "101RECNX" / "RCNX0101.JPG",
    ]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        copy_in(path)
    hints = HintRecorder()
    make_watcher([WatchedInbox(inbox)], hints)
    root_hint_count = len(hints.paths)
    tree.rename(inbox / "DCIM")

    moved = [inbox / path.relative_to(outside) for path in files]
    # The root hint from start() would cover everything; only hints after it count here.
    wait_for(lambda: all(_covered(hints.paths[root_hint_count:], path) for path in moved))


def _covered(hinted: list[Path], path: Path) -> bool:
    return any(item == path or item in path.parents for item in hinted)


def test_polling_mode_hints_new_files(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints = HintRecorder()
    watcher = make_watcher([WatchedInbox(inbox, polling=True)], hints)
    copy_in(inbox / "IMG_0005.JPG")

    wait_for(lambda: hints.saw(inbox / "IMG_0005.JPG"))
    assert watcher.is_healthy()


def test_failing_on_hint_does_not_kill_the_observer(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints = HintRecorder()
    failures: list[Path] = []

    def flaky_hint(path: Path) -> None:
        if path.name.startswith("BAD"):
            failures.append(path)
            raise RuntimeError(f"downstream refused {path}")
        hints(path)

    watcher = make_watcher([WatchedInbox(inbox)], flaky_hint)
    copy_in(inbox / "BAD_0001.JPG")
    wait_for(lambda: failures)
    copy_in(inbox / "IMG_0006.JPG")

    wait_for(lambda: hints.saw(inbox / "IMG_0006.JPG"))
    assert watcher.is_healthy()


def test_deleted_and_recreated_inbox_is_repaired(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints = HintRecorder()
    watcher = make_watcher([WatchedInbox(inbox)], hints)
    shutil.rmtree(inbox)
    inbox.mkdir()

    # The inode number may be reused at once; then only the stopped watch gives it away, which
    # watchdog notices a moment later. A periodic check_health sees it on one of its calls.
    problems: list[str] = []

    def health_reports_a_problem() -> bool:
        problems.extend(watcher.check_health())
        return bool(problems)

    wait_for(health_reports_a_problem)
    assert str(inbox) in problems[0]
    assert "re-established" in problems[0]
    assert hints.paths.count(inbox) == 2  # start, then the repair asks for a rescan
    assert watcher.check_health() == []

    copy_in(inbox / "IMG_0007.JPG")
    wait_for(lambda: hints.saw(inbox / "IMG_0007.JPG"))


def test_inbox_moved_away_and_recreated_is_repaired(
    inbox: Path, tmp_path: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    """inotify follows a renamed folder, so the old watch lives on, watching the wrong folder."""
    hints = HintRecorder()
    watcher = make_watcher([WatchedInbox(inbox)], hints)
    inbox.rename(tmp_path / "inbox.old")
    inbox.mkdir()

    problems = watcher.check_health()

    assert len(problems) == 1
    assert "replaced" in problems[0]
    assert hints.paths == [inbox, inbox]
    copy_in(inbox / "IMG_0011.JPG")
    wait_for(lambda: hints.saw(inbox / "IMG_0011.JPG"))


def test_symlinked_inbox_is_refused_with_a_reason(
    tmp_path: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "inbox_link"
    link.symlink_to(real, target_is_directory=True)
    watcher = make_watcher([WatchedInbox(link)], HintRecorder())

    problems = watcher.check_health()

    assert len(problems) == 1
    assert "symbolic link" in problems[0]
    assert not watcher.is_healthy()


def test_missing_inbox_is_reported_until_it_appears(
    tmp_path: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    mount = tmp_path / "not_yet_mounted"
    hints = HintRecorder()
    watcher = make_watcher([WatchedInbox(mount)], hints)

    assert not watcher.is_healthy()
    for _ in range(2):
        problems = watcher.check_health()
        assert len(problems) == 1
        assert str(mount) in problems[0]
    assert hints.paths == []

    mount.mkdir()
    assert "re-established" in watcher.check_health()[0]
    assert hints.paths == [mount]
    assert watcher.is_healthy()
    copy_in(mount / "IMG_0008.JPG")
    wait_for(lambda: hints.saw(mount / "IMG_0008.JPG"))


def test_removed_inbox_is_reported_while_missing(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    watcher = make_watcher([WatchedInbox(inbox)], HintRecorder())
    inbox.rmdir()

    first = watcher.check_health()
    assert len(first) == 1
    assert "disappeared" in first[0] or "stopped" in first[0]
    assert str(inbox) in watcher.check_health()[0]  # still missing: reported again
    assert not watcher.is_healthy()


def test_killed_observer_is_repaired(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints = HintRecorder()
    watcher = make_watcher([WatchedInbox(inbox)], hints)
    internal = watcher._active[inbox].observer
    internal.stop()  # simulate the thread dying
    internal.join(timeout=TIMEOUT)
    assert not watcher.is_healthy()

    problems = watcher.check_health()

    assert len(problems) == 1
    assert "observer thread died" in problems[0]
    assert watcher.is_healthy()
    assert watcher._active[inbox].observer is not internal
    copy_in(inbox / "IMG_0009.JPG")
    wait_for(lambda: hints.saw(inbox / "IMG_0009.JPG"))


def test_inotify_limit_falls_back_to_polling(
    inbox: Path, make_watcher: Callable[..., InboxWatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    class ExhaustedObserver(Observer):  # type: ignore[misc,valid-type]
        def start(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(watcher_module, "Observer", ExhaustedObserver)
    hints = HintRecorder()
    watcher = make_watcher([WatchedInbox(inbox)], hints)
    copy_in(inbox / "IMG_0010.JPG")

    wait_for(lambda: hints.saw(inbox / "IMG_0010.JPG"))
    assert watcher.is_healthy()


def test_stop_ends_every_observer_thread(
    inbox: Path, tmp_path: Path, name_filter: NameFilter
) -> None:
    second = tmp_path / "second"
    second.mkdir()
    watcher = InboxWatcher(
        [WatchedInbox(inbox), WatchedInbox(second, polling=True)],
        HintRecorder(),
        name_filter,
        poll_interval=POLL,
    )
    watcher.start()
    observers = [active.observer for active in watcher._active.values()]
    assert len(observers) == 2

    # Hang guard only: stop() joins the observer threads.
    assert returns_within(watcher.stop, 30.0), "stop() did not return"

    assert not any(observer.is_alive() for observer in observers)
    assert not watcher.is_healthy()
    assert watcher.check_health() == []
    watcher.stop()  # a second stop is harmless


class WriteStateRecorder:
    """The on_write_state callback: records (path, hint) pairs, from any watchdog thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[Path, Hint]] = []

    def __call__(self, path: Path, hint: Hint) -> None:
        with self._lock:
            self._seen.append((path, hint))

    @property
    def seen(self) -> list[tuple[Path, Hint]]:
        with self._lock:
            return list(self._seen)


def test_inotify_reports_a_writer_open_until_it_closes_the_file(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints, states = HintRecorder(), WriteStateRecorder()
    make_watcher([WatchedInbox(inbox)], hints, on_write_state=states)
    image = inbox / "IMG_0001.JPG"
    with image.open("wb") as upload:
        upload.write(b"\xff\xd8\xff\xe0half")
        upload.flush()
        wait_for(lambda: (image, Hint.WRITTEN) in states.seen)
        assert (image, Hint.CLOSED) not in states.seen  # still open: an upload under way
    wait_for(lambda: (image, Hint.CLOSED) in states.seen)
    assert hints.saw(image)  # the creation itself is still a plain hint


def test_polling_inboxes_send_no_write_state_since_they_never_see_a_close(
    inbox: Path, make_watcher: Callable[..., InboxWatcher]
) -> None:
    hints, states = HintRecorder(), WriteStateRecorder()
    make_watcher([WatchedInbox(inbox, polling=True)], hints, on_write_state=states)
    image = inbox / "IMG_0001.JPG"
    copy_in(image)
    wait_for(lambda: hints.saw(image))
    with image.open("ab") as more:
        more.write(b"more")
    # The change arrives as a plain hint (the quiet period judges it), never as WRITTEN.
    wait_for(lambda: hints.paths.count(image) >= 2)
    assert states.seen == []
