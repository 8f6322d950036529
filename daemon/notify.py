"""Speaks systemd's sd_notify protocol: one datagram to $NOTIFY_SOCKET per message."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends READY=1, WATCHDOG=1, STOPPING=1 when run under systemd; does nothing otherwise.

    Every send is non-blocking: a receiver that does not drain its socket (a full queue) costs
    a lost message, never a stalled daemon. WATCHDOG=1 goes out only when systemd asked for
    it ($WATCHDOG_USEC, for this process when $WATCHDOG_PID is set). READY=1 is the exception to
    "a lost message": systemd kills a Type=notify service that never sends it, so a failed
    READY=1 stays pending and `resend_ready` (each health-check tick) sends it until one works.
    """

    def __init__(self, environ: Mapping[str, str], *, pid: int | None = None) -> None:
        socket_path = environ.get("NOTIFY_SOCKET") or None
        # An abstract socket is written "@name" in the variable and "\0name" on the wire.
        if socket_path is not None and socket_path.startswith("@"):
            socket_path = "\0" + socket_path[1:]
        self._address = socket_path
        self._wants_watchdog = _watchdog_requested(environ, os.getpid() if pid is None else pid)
        self._socket: socket.socket | None = None
        self._failing = False  # a failure is logged when it starts, not for every message
        self._pending_ready: str | None = None

    def ready(self, status: str = "") -> None:
        self._pending_ready = "READY=1" + (f"\nSTATUS={status}" if status else "")
        self.resend_ready()

    def resend_ready(self) -> None:
        """Send READY=1 again if it has not gone out yet (non-blocking, as every send)."""
        if self._pending_ready is not None and self._send(self._pending_ready):
            self._pending_ready = None

    def watchdog(self) -> None:
        if self._wants_watchdog:
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> bool:
        """Send one datagram; False when it was lost (True with no socket: nothing to send)."""
        if self._address is None:
            return True
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._socket.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as err:
            # A lost notification must never stop the daemon; systemd notices by itself.
            if not self._failing:
                logger.warning(
                    "could not notify systemd at %s (%s): %s; further failures are not logged",
                    self._address.replace("\0", "@"),
                    message.splitlines()[0],
                    err,
                )
            self._failing = True
            return False
        if self._failing:
            logger.info("notifications reach systemd again (%s)", message.splitlines()[0])
            self._failing = False
        return True


def _watchdog_requested(environ: Mapping[str, str], pid: int) -> bool:
    """True when systemd set a watchdog interval for this process (sd_watchdog_enabled)."""
    try:
        interval_usec = int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return False
    if interval_usec <= 0:
        return False
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is None:
        return True
    try:
        return int(watchdog_pid) == pid
    except ValueError:
        return False
