"""The socket and the web server (uvicorn) under the page.

The socket is bound before uvicorn starts, so a busy port is a one-line error and ``--port 0``
(any free port) prints the port it got. ``serve_forever`` runs in the main thread until Ctrl+C;
:class:`BackgroundServer` runs the same server in a thread (tests, notebooks).
"""

from __future__ import annotations

import errno
import socket
import threading
import time

from mrhd.errors import MrhdError

# libgomp's spin-wait for `mrhd serve` on a CPU (set before torch loads; GOMP_SPINCOUNT or
# OMP_WAIT_POLICY in the environment win). The server's two lanes run torch at once, and a server
# often shares its machine: with more runnable threads than cores, a thread spinning at a barrier
# burns the time slice its partner needs. On the 2-core CPU of benchmarks/predict.py, under a load
# average of 7-9 from other processes, 2 torch threads took 0.9-2.3 s per warm query (CG-DETR + CLIP
# text, 75 clips) and 19-35 s for 100 queries with libgomp's default (300,000 rounds), 1.7 s and 26 s
# with 30,000, and 0.23-0.30 s and 6.4-10 s with 1,000 (1 thread: 0.28-0.31 s and 13-14 s).
OPENMP_SPIN_ROUNDS = 1000


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port`` 0: any free one)."""
    if not 0 <= port <= 65535:
        raise MrhdError(f"--port {port} is not a port number; use 1-65535 (0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise MrhdError(f"--host {host!r} is not an address or name of this machine; use 127.0.0.1 "
                        "(this machine only) or 0.0.0.0 (every interface)") from None
    family, _type, _proto, _name, address = infos[0]
    try:
        return socket.create_server(address, family=family)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise MrhdError(f"port {port} on {host} is in use; pick another with --port (0: any free port)") from None
        if err.errno == errno.EACCES:
            raise MrhdError(f"port {port} needs root; pick one above 1023 with --port") from None
        raise MrhdError(f"cannot listen on {host}:{port} ({err.strerror}); check --host and --port") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app, log_level: str):
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", http="h11", ws="none",
                            timeout_graceful_shutdown=3)
    return uvicorn.Server(config)


def serve_forever(app, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve until Ctrl+C or SIGTERM: uvicorn gives open requests a few seconds, then passes the
    signal on, and this returns (SIGTERM too, so that the caller's clean-up runs)."""
    from mrhd.extract.job import install_sigterm

    undo = install_sigterm()
    try:
        _server(app, log_level).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        undo()


class BackgroundServer:
    """The same server in a daemon thread: ``with BackgroundServer(app) as url: ...``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = _server(app, log_level)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="mrhd-serve")

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
