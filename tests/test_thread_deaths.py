"""The health check's "a daemon thread died": a thread that ended on a stop is not a death."""

from __future__ import annotations

import threading

from daemon.service import _Threads


def _ended(threads: _Threads) -> None:
    for thread in threads.started:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_a_thread_that_ended_on_a_stop_did_not_die() -> None:
    # SIGTERM landing as the health check's wait times out: the threads end on the stop before
    # the check looks at them. Taken for a death, the daemon exited 1 instead of 0.
    threads = _Threads()
    threads.start("waits-for-stop", lambda: threads.stop.wait())
    threads.stop.set()
    _ended(threads)

    assert not threads.one_died()


def test_a_thread_that_ended_with_no_stop_asked_for_died() -> None:
    threads = _Threads()
    threads.start("runs-once", lambda: None)
    threads.start("waits-for-stop", lambda: threads.stop.wait(timeout=30))
    threads.started[0].join(timeout=30)

    assert threads.one_died()
    threads.stop.set()


def test_threads_all_running_did_not_die() -> None:
    threads = _Threads()
    release = threading.Event()
    threads.start("waits", release.wait)

    assert not threads.one_died()
    release.set()
    _ended(threads)
