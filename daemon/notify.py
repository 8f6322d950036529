"""Speaks systemd's sd_notify protocol: one datagram to $NOTIFY_SOCKET per message."""

from __future__ import annotations

import logging
import socket

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends READY=1, WATCHDOG=1, STOPPING=1 when run under systemd; does nothing otherwise."""

    def __init__(self, socket_path: str | None) -> None:
        # An abstract socket is written "@name" in the variable and "\0name" on the wire.
        if socket_path and socket_path.startswith("@"):
            socket_path = "\0" + socket_path[1:]
        self._address = socket_path or None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as err:
            # A lost notification must never stop the daemon; systemd will notice by itself.
            logger.warning("could not notify systemd (%s): %s", message, err)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")
