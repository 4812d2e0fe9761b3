"""The sandbox billing API on a real socket: the Starlette app of :mod:`.app` under uvicorn, in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import Scope

from .app import create_app
from .billing import SandboxBilling

#: How long a stop waits for requests still running (they finish in milliseconds once hangs are cut).
_STOP_TIMEOUT_S = 5.0


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    # proto=IPPROTO_TCP, not 0: accepted sockets inherit it, and asyncio turns Nagle off only on
    # sockets that say they are TCP. With Nagle on, uvicorn's separate writes of headers and body
    # wait for the client's delayed ACK: 40 ms per answer.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse its port at once
        sock.bind((host, port))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, stopped at once: the tests start and stop sandboxes by the dozen.

    uvicorn notices ``should_exit`` at its next 0.1 s tick, then gives open
    connections 0.1 s of grace before waiting for them. Here the stop wakes the
    loop through ``closing``, which also ends every injected hang, so the
    requests still running finish within a few loop turns and need no grace.
    """

    def __init__(self, config: uvicorn.Config, closing: asyncio.Event) -> None:
        super().__init__(config)
        self.closing = closing

    async def main_loop(self) -> None:
        await self.closing.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # an idle keep-alive connection closes now, a busy one after its answer
        if self.server_state.tasks:
            await asyncio.wait(set(self.server_state.tasks), timeout=_STOP_TIMEOUT_S)
        for server in self.servers:
            await server.wait_closed()


class _Serving:
    """One run of the server: its socket, its uvicorn server, the thread and event loop it runs in."""

    def __init__(self, billing: SandboxBilling, secret: str, host: str, port: int) -> None:
        # Bound here, in the caller's thread: a port in use fails start() itself, and the
        # address is known before the first request.
        self.socket = _listen(host, port)
        self.closing = asyncio.Event()
        app = create_app(billing, secret, closing=self.closing, drop=self._drop)
        config = uvicorn.Config(
            app,
            lifespan="off",
            # Leave the process's logging alone and log no access lines: the call log is the record.
            log_config=None,
            access_log=False,
            # The peer address must stay the socket's own: _drop finds the connection by it.
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        self.server = _Uvicorn(config, self.closing)
        self.runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self.loop = self.runner.get_loop()
        self.thread = threading.Thread(target=self._serve, name="sandbox-billing", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    def _serve(self) -> None:
        with self.runner:
            self.runner.run(self.server.serve(sockets=[self.socket]))

    def _drop(self, scope: Scope) -> None:
        # ASGI has no "close without answering"; uvicorn keeps its connections (protocol objects
        # with the peer address and the transport) in server_state, so close the transport there.
        peer = scope.get("client")
        for connection in list(self.server.server_state.connections):
            if peer is not None and getattr(connection, "client", None) == tuple(peer):
                connection.transport.close()

    def start(self) -> None:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                self.socket.close()
                raise RuntimeError("sandbox billing server did not start (see the traceback above)")
            time.sleep(0.002)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed already: the server is gone
            self.loop.call_soon_threadsafe(self.closing.set)
        self.thread.join()
        self.socket.close()


class SandboxServer:
    """The sandbox billing API on a real socket, served from a background thread."""

    def __init__(self, *, secret: str, seed: int = 7, host: str = "127.0.0.1", port: int = 0) -> None:
        """Prepare a server; ``port=0`` picks a free port at :meth:`start`."""
        self.state = SandboxBilling(seed=seed)
        self._secret, self._host, self._port = secret, host, port
        self._serving: _Serving | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._serving is None:
            raise RuntimeError("sandbox server is not running")
        host, port = self._serving.address
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Start serving (idempotent) and return the base URL."""
        if self._serving is None:
            serving = _Serving(self.state, self._secret, self._host, self._port)
            serving.start()
            self._serving = serving
        return self.url

    def stop(self) -> None:
        """Stop serving and release the port; hanging requests are cut short."""
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
