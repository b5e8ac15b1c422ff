"""systemd's notify protocol: tell the service manager we are ready, alive, stopping.

A datagram to the socket in ``$NOTIFY_SOCKET`` (set by systemd for
``Type=notify`` units; unset otherwise, and then these do nothing). The unit's
``WatchdogSec`` reaches us as ``$WATCHDOG_USEC``: :class:`Watchdog` pings at half
that period.
"""

from __future__ import annotations

import os
import socket
import time


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


class Watchdog:
    """Pings ``WATCHDOG=1`` at most every half watchdog period (never, without one)."""

    def __init__(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        enabled = usec is not None and (pid is None or pid == str(os.getpid()))
        self.interval = int(usec) / 2e6 if enabled and usec else None
        self._last = 0.0

    def ping(self) -> None:
        if self.interval is not None and time.monotonic() - self._last >= self.interval:
            notify("WATCHDOG=1")
            self._last = time.monotonic()
