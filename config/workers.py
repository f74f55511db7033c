"""The web tier's gunicorn worker class (the Procfile's ``web`` line): uvicorn's, accepting one
connection per wake-up so a burst of keep-alive connections spreads over every worker process.
See docs/decisions/0150-web-worker-balance.md.

All workers listen on gunicorn's one shared socket. asyncio's accept loop takes up to
``backlog`` queued connections each time the socket is readable (uvicorn passes 2048), so the
first worker to wake takes a whole burst (32 wrk connections, a client's pool) and keeps those
keep-alive connections for good: one process, one GIL, served the whole load while the other
idled. Accepting one connection per wake-up leaves the rest queued for whichever worker's loop
runs next, and a busy worker's loop waits for its own GIL, so the idle one tends to take them.

asyncio reads that count from ``create_server(backlog=...)``, which also calls
``sock.listen(backlog)`` on the shared socket: after startup the socket is listened on again
with gunicorn's ``--backlog`` (2048 by default), so the kernel's queue keeps its size.
"""

import socket
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

# Connections taken per wake-up of a worker's accept loop.
ACCEPT_PER_WAKEUP = 1


class ListenBacklogServer(Server):
    """uvicorn's server that, once its listeners run, restores the kernel's listen queue that
    asyncio shrank to ``config.backlog`` (the accept count)."""

    listen_backlog = 2048

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        for sock in sockets or ():
            sock.listen(self.listen_backlog)


class BalancedUvicornWorker(UvicornWorker):
    # The asyncio loop on purpose: the accept count above is asyncio's behaviour (uvloop's
    # accept loop is its own), and that is what was measured.
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "asyncio",
        "http": "auto",
        "backlog": ACCEPT_PER_WAKEUP,
    }

    async def _serve(self) -> None:
        # UvicornWorker._serve (uvicorn-worker 0.4), with the server above.
        self.config.app = self.wsgi
        server = ListenBacklogServer(config=self.config)
        server.listen_backlog = self.cfg.backlog
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
