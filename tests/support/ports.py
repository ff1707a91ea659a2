"""Free local TCP ports, so that tests running side by side never share one."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now, as the kernel picks it for a bind to port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
