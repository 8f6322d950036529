"""A stand-in for systemd's $NOTIFY_SOCKET, shared by every test that listens to sd_notify."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.daemon_support import wait_for

FILLER = "X" * 512  # what fill() queues: tests tell it apart from the daemon's own messages


class NotifyReceiver:
    """A bound AF_UNIX datagram socket, read only when a test asks.

    Each datagram is stamped with the monotonic time it was read; `mark()` reads the queue
    first, so whatever arrived before a mark is stamped before it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[tuple[float, str]] = []
        self.filled = 0
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.setblocking(False)

    def drain(self) -> list[str]:
        """Reads every datagram queued now; returns those just read."""
        fresh = []
        while True:
            try:
                fresh.append(self._socket.recv(4096).decode(errors="replace"))
            except BlockingIOError:
                break
        now = time.monotonic()
        self.received += [(now, text) for text in fresh]
        return fresh

    @property
    def messages(self) -> list[str]:
        self.drain()
        return [text for _, text in self.received]

    def lines(self) -> list[str]:
        return [line for message in self.messages for line in message.splitlines()]

    def wait_for_line(self, line: str, timeout: float) -> bool:
        return wait_for(lambda: line in self.lines(), timeout)

    def mark(self) -> float:
        """A moment for `pings_since`: everything that arrived before it is read first."""
        self.drain()
        return time.monotonic()

    def pings_since(self, moment: float) -> int:
        self.drain()
        return sum(1 for at, text in self.received if at >= moment and "WATCHDOG=1" in text)

    def fill(self) -> int:
        """Queue FILLER datagrams until a send would block, as a systemd that stopped reading."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            while True:
                try:
                    sender.sendto(FILLER.encode(), str(self.path))
                except BlockingIOError:
                    return self.filled
                self.filled += 1

    def close(self) -> None:
        self._socket.close()
