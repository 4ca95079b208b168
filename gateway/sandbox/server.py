"""The AURA sandbox's HTTP side: an API listener, a control listener, and fault injection.

Two loopback listeners so the API can be "down" (listening socket closed: connection
refused) while tests still drive the sandbox through the control port. Both use stdlib
``ThreadingHTTPServer`` with keep-alive and TCP_NODELAY, since the benchmarks measure
latency through them and a 40 ms Nagle/delayed-ACK step would swamp the figures.

Each listener runs its own accept loop on a selector plus a wake-up socketpair rather than
``serve_forever``: closing is immediate and an idle sandbox never wakes up to poll.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import secrets
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, ClassVar, cast
from urllib.parse import parse_qs, urlsplit

import httpx

from gateway.sandbox.state import (
    HTTP_CALLOUT_CLOSED,
    Fault,
    FaultMode,
    RecordedRequest,
    Reply,
    SandboxSeed,
    SandboxState,
    parse_json,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
JOIN_TIMEOUT_S = 2.0
# max_rate()'s own requests carry this header with the sandbox's private nonce: they skip
# fault injection and the request record, so measuring never disturbs a test.
BENCH_HEADER = "X-Sandbox-Bench"
_REASONS = {HTTP_CALLOUT_CLOSED: "Callout Closed"}


def _loopback_host(host: str) -> str:
    """Only IPv4 loopback: the sandbox holds test credentials and must not face a network."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"sandbox host must be a loopback IPv4 address, not {host!r}") from None
    if address.version != 4 or not address.is_loopback:
        raise ValueError(f"sandbox host must be a loopback IPv4 address, not {host!r}")
    return host


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # the sandbox joins its own connection threads, with a timeout
    allow_reuse_address = True  # so a "down" API can come back on the same port at once
    request_queue_size = 128  # benchmarks open connections in bursts

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sandbox: AuraSandbox,
        channel: str,
    ) -> None:
        self.sandbox = sandbox
        self.channel = channel
        super().__init__(address, handler)
        self.socket.setblocking(False)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A peer that went away (or a connection we cut for "down"/stop) is not an error.
        if isinstance(sys.exc_info()[1], OSError):
            return
        logger.exception("sandbox %s: error serving %s", self.channel, client_address)


class _Listener:
    """One listening socket and its accept loop."""

    def __init__(
        self,
        sandbox: AuraSandbox,
        handler: type[BaseHTTPRequestHandler],
        host: str,
        port: int,
        channel: str,
    ) -> None:
        self.server = _Server((host, port), handler, sandbox, channel)
        self.port: int = self.server.server_port
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"aura-sandbox-{channel}-accept", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        server = self.server
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    return
                try:
                    request, client_address = server.get_request()
                except OSError:  # nothing pending after all, or the peer already reset
                    continue
                request.setblocking(True)
                try:
                    server.process_request(request, client_address)
                except Exception:
                    server.handle_error(request, client_address)
                    server.shutdown_request(request)

    def close(self) -> None:
        """Stop accepting and close the listening socket (new connections are refused)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(JOIN_TIMEOUT_S)
        self.server.server_close()
        self._wake_r.close()
        self._wake_w.close()


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, Nagle off, headers and body sent in one write."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = -1  # buffered: flushed once per response by handle_one_request
    server: _Server
    arrived_ns: int = 0

    def setup(self) -> None:
        super().setup()
        self.server.sandbox._track(self.server.channel, self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._untrack(self.server.channel, self.connection)

    def parse_request(self) -> bool:
        # Called right after the request line was read: the arrival stamp benchmarks compare.
        self.arrived_ns = time.monotonic_ns()
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.verbose:
            super().log_message(format, *args)

    def _handle(self) -> None:
        split = urlsplit(self.path)
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            self._on_bad_framing(split.path)
            self._send(Reply(400, {"message": "Bad request framing"}))
            return
        self._dispatch(split.path, split.query, raw)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def _dispatch(self, path: str, query: str, raw: bytes) -> None:
        raise NotImplementedError

    def _on_bad_framing(self, path: str) -> None:
        """Hook for the API side to record the request."""

    def _read_body(self) -> bytes | None:
        """The request body, or None when its framing is unusable."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        if not 0 <= size <= MAX_BODY_BYTES:
            return None
        data = self.rfile.read(size)
        return data if len(data) == size else None

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                return None
            chunk = self.rfile.read(size)
            self.rfile.readline(8)
            if len(chunk) != size:
                return None
            chunks.append(chunk)

    def _send(self, reply: Reply) -> None:
        payload = reply.payload()
        self.send_response(reply.status, _REASONS.get(reply.status))
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _hang_up(self) -> None:
        """End the connection without a response (the client sees a disconnect)."""
        self.close_connection = True


class _ApiHandler(_Handler):
    def _on_bad_framing(self, path: str) -> None:
        self.server.sandbox._state.record_unprocessed(self.command, path, b"", 400, self.arrived_ns)

    def _dispatch(self, path: str, query: str, raw: bytes) -> None:
        sandbox = self.server.sandbox
        state = sandbox._state
        authorization = self.headers.get("Authorization")
        marker = self.headers.get(BENCH_HEADER)
        bench = marker is not None and secrets.compare_digest(marker, sandbox._bench_nonce)
        action = None if bench else state.take_fault(path)
        if action is not None:
            if action.mode == "down":  # slipped in on a connection being cut: refuse it
                self._hang_up()
                return
            if action.mode in ("error", "rate_limit"):
                self._send(
                    state.fault_reply(
                        action, self.command, path, authorization, raw, self.arrived_ns
                    )
                )
                return
            if action.mode == "slow" and sandbox._stopping.wait(action.delay_s):
                self._hang_up()
                return
        dropped = action is not None and action.mode in ("drop_reply", "stall")
        try:
            reply = state.handle_api(
                self.command,
                path,
                authorization,
                raw,
                self.arrived_ns,
                reply_dropped=dropped,
                record=not bench,
            )
        except Exception:  # a sandbox bug: say so loudly rather than hang up silently
            logger.exception("sandbox: %s %s failed", self.command, path)
            self._send(Reply(500, {"message": "Sandbox internal error"}))
            return
        if action is not None and action.mode == "stall":
            # Processed; now hold the connection without answering until released.
            action.release.wait(action.delay_s or None)
        if dropped:
            self._hang_up()
            return
        self._send(reply)


class _ControlHandler(_Handler):
    """Unauthenticated JSON mirror of the Python control API; never faulted or recorded."""

    _ROUTES: ClassVar[tuple[tuple[str, re.Pattern[str], str], ...]] = tuple(
        (method, re.compile(pattern), name)
        for method, pattern, name in (
            ("GET", r"/health", "health"),
            ("POST", r"/fault", "fault"),
            ("GET", r"/fault", "get_fault"),
            ("POST", r"/fault/clear", "clear_fault"),
            ("POST", r"/callouts/(?P<callout_id>\d+)/status", "status"),
            ("POST", r"/callouts/(?P<callout_id>\d+)/close", "close"),
            ("POST", r"/tokens/expire", "expire"),
            ("GET", r"/requests", "requests"),
            ("GET", r"/callouts", "callouts"),
        )
    )

    def _dispatch(self, path: str, query: str, raw: bytes) -> None:
        for method, pattern, route_name in self._ROUTES:
            if method == self.command and (m := pattern.fullmatch(path.rstrip("/") or "/")):
                name = route_name
                break
        else:
            self._send(Reply(404, {"message": "Not found"}))
            return
        try:
            body = parse_json(raw)
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            result = getattr(self, f"_control_{name}")(m.groupdict(), body, parse_qs(query))
        except KeyError as exc:
            self._send(Reply(404, {"message": str(exc.args[0] if exc.args else exc)}))
        except (ValueError, TypeError) as exc:
            self._send(Reply(400, {"message": str(exc)}))
        except RuntimeError as exc:  # e.g. a fault set while the sandbox is stopping
            self._send(Reply(409, {"message": str(exc)}))
        else:
            self._send(Reply(200, result))

    def _control_health(self, _p: dict[str, str], _b: dict[str, Any], _q: Any) -> Any:
        return {"ok": True}

    def _control_fault(self, _p: dict[str, str], body: dict[str, Any], _q: Any) -> Any:
        allowed = {"mode", "status", "retry_after", "delay_s", "count", "path_regex"}
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "mode" not in body:
            raise ValueError("mode is required")
        # JSON null means "default" for every field.
        options = {k: v for k, v in body.items() if k != "mode" and v is not None}
        self.server.sandbox.set_fault(body["mode"], **options)
        return {"ok": True}

    def _control_get_fault(self, _p: dict[str, str], _b: dict[str, Any], _q: Any) -> Any:
        fault = self.server.sandbox.fault
        return {"fault": fault.to_dict() if fault else None}

    def _control_clear_fault(self, _p: dict[str, str], _b: dict[str, Any], _q: Any) -> Any:
        self.server.sandbox.clear_fault()
        return {"ok": True}

    def _control_status(self, params: dict[str, str], body: dict[str, Any], _q: Any) -> Any:
        status = body.get("status")
        if not isinstance(status, str) or not status:
            raise ValueError("status must be a non-empty string")
        self.server.sandbox.set_status(int(params["callout_id"]), status)
        return {"ok": True}

    def _control_close(self, params: dict[str, str], _b: dict[str, Any], _q: Any) -> Any:
        self.server.sandbox.close_callout(int(params["callout_id"]))
        return {"ok": True}

    def _control_expire(self, _p: dict[str, str], _b: dict[str, Any], _q: Any) -> Any:
        self.server.sandbox.expire_tokens()
        return {"ok": True}

    def _control_requests(self, _p: dict[str, str], _b: dict[str, Any], query: Any) -> Any:
        since = int(query.get("since", ["0"])[0])
        return [r.to_dict() for r in self.server.sandbox._state.requests(since)]

    def _control_callouts(self, _p: dict[str, str], _b: dict[str, Any], _q: Any) -> Any:
        return self.server.sandbox.callouts()


class AuraSandbox:
    """A local stand-in of AURA's Panic API with fault injection.

    Use as a context manager, or ``start()``/``stop()``. Ports given as 0 are picked free;
    the actual ones are in ``port`` and ``control_port`` after ``start()``.
    """

    def __init__(
        self,
        seed: SandboxSeed | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int = 0,
        verbose: bool = False,
    ) -> None:
        self.seed = seed if seed is not None else SandboxSeed()
        self.host = _loopback_host(host)
        self.verbose = verbose
        self.port = port
        self.control_port = control_port
        self._state = SandboxState(self.seed)
        self._lifecycle = threading.Lock()  # start/stop/down/up; never held by the API path
        self._conn_lock = threading.Lock()
        self._conns: dict[str, dict[socket.socket, threading.Thread]] = {"api": {}, "control": {}}
        self._closed_channels: set[str] = set()  # listener closed: late connections are cut
        self._api: _Listener | None = None
        self._control: _Listener | None = None
        self._started = False
        self._stopping = threading.Event()
        self._bench_nonce = secrets.token_hex(16)

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Base URL including the ``/panic-api/v2`` prefix."""
        return f"{self.base_url}/panic-api/v2"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    def start(self) -> AuraSandbox:
        with self._lifecycle:
            if self._started:
                raise RuntimeError("sandbox already started")
            self._api = _Listener(self, _ApiHandler, self.host, self.port, "api")
            try:
                self._control = _Listener(
                    self, _ControlHandler, self.host, self.control_port, "control"
                )
            except BaseException:
                self._api.close()
                self._api = None
                raise
            self.port, self.control_port = self._api.port, self._control.port
            self._state.public_url = self.base_url
            self._started = True
        return self

    def stop(self) -> None:
        """Close both listeners, cut every connection, release stalls; bounded in time."""
        with self._lifecycle:
            if not self._started or self._stopping.is_set():
                return
            self._stopping.set()
            self._state.release_stalls()
            for listener in (self._api, self._control):
                if listener is not None:
                    listener.close()
            self._api = self._control = None
            threads = self._cut_connections("api") + self._cut_connections("control")
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> AuraSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -------------------------------------------------------------------- control

    @property
    def fault(self) -> Fault | None:
        """The fault in force, if any."""
        return self._state.fault

    def set_fault(
        self,
        mode: str,
        *,
        status: int = 503,
        retry_after: float | None = None,
        delay_s: float = 0.0,
        count: int | None = None,
        path_regex: str | None = None,
    ) -> None:
        """Inject a fault into API requests (never the control port); replaces any previous one.

        Modes: ``down`` closes the API listener and its connections (refused until
        ``clear_fault``; ``count`` and ``path_regex`` are ignored); ``error`` answers
        ``status`` without touching state; ``rate_limit`` answers 429; ``slow`` waits
        ``delay_s`` then serves; ``drop_reply`` serves, then hangs up without a reply;
        ``stall`` serves, then holds the connection silent until the fault is cleared or
        replaced, ``delay_s`` passes (0 = no limit) or the sandbox stops, then hangs up.
        ``retry_after`` adds a ``Retry-After`` header to ``error``/``rate_limit`` answers.
        ``count`` limits the fault to that many matching requests; ``path_regex`` is
        searched in the request path. Raises ValueError for bad arguments.
        """
        fault = Fault(cast(FaultMode, mode), status, retry_after, delay_s, count, path_regex)
        with self._lifecycle:
            if not self._started or self._stopping.is_set():
                raise RuntimeError("sandbox is not running")
            self._state.set_fault(fault)
            if fault.mode == "down":
                self._close_api()
            else:
                self._open_api()

    def clear_fault(self) -> None:
        """Back to normal service; a "down" API reopens on the same port."""
        with self._lifecycle:
            self._state.clear_fault()
            if self._started and not self._stopping.is_set():
                self._open_api()

    def set_status(self, callout_id: int, status: str) -> None:
        """Change a callout's status text (e.g. "Responder Dispatched"). KeyError if unknown."""
        self._state.set_status(callout_id, status)

    def close_callout(self, callout_id: int) -> None:
        """Close a callout as AURA's controller would: status "Closed", then 285s."""
        self._state.close_callout(callout_id)

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far."""
        self._state.expire_tokens()

    def requests(self) -> list[RecordedRequest]:
        """Recorded API requests in order (a new list; the records are immutable)."""
        return self._state.requests()

    def callouts(self) -> list[dict[str, Any]]:
        """Every callout, closed ones included, with location-update and event counts."""
        return self._state.callouts()

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float) -> bool:
        """Block until ``predicate(requests)`` is true (re-checked on each new record)."""
        return self._state.wait_for(predicate, timeout)

    def max_rate(self, seconds: float = 1.0, connections: int = 4) -> float:
        """The sandbox's own ceiling in requests/s, measured now over real HTTP.

        ``connections`` keep-alive httpx clients, one thread each, send location updates to
        a hidden callout of the sandbox's own for ``seconds``; every answer must be 200.
        Those requests skip fault injection and are left out of ``requests()``, and the
        callout is never listed (``callouts()``, activeCallouts) and is removed afterwards,
        so a test or benchmark can measure between its own steps. Client-side cost (httpx,
        the GIL shared with the server threads) is in the figure, as it is for any caller
        in the same process. Raises RuntimeError if the API does not answer.
        """
        if not (seconds > 0 and connections >= 1):
            raise ValueError("seconds must be > 0 and connections >= 1")
        if not self._started or self._stopping.is_set():
            raise RuntimeError("sandbox is not running")
        callout_id, token = self._state.bench_open()
        path = f"/panic-api/v2/callouts/{callout_id}/location"
        body = {"latitude": -33.92, "longitude": 18.42, "accuracy": 5.0}
        headers = {"Authorization": f"Bearer {token}", BENCH_HEADER: self._bench_nonce}
        counts = [0] * connections
        errors: list[str] = []
        window: list[float] = []  # [start, deadline], set once every client is connected

        def open_window() -> None:  # run by the barrier before it releases anyone
            now = time.perf_counter()
            window[:] = [now, now + seconds]

        # Each client's first request may take a connect: allow for that, then give up.
        ready = threading.Barrier(connections + 1, action=open_window, timeout=10.0)

        def drive(slot: int, http: httpx.Client) -> None:
            try:
                http.post(path, json=body).raise_for_status()  # connect, keep alive
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                return
            if errors:
                return
            deadline = window[1]
            done = 0
            try:
                while time.perf_counter() < deadline:
                    response = http.post(path, json=body)
                    if response.status_code != 200:
                        errors.append(f"HTTP {response.status_code}")
                        return
                    done += 1
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                counts[slot] = done

        clients = [
            httpx.Client(base_url=self.base_url, headers=headers, timeout=5.0)
            for _ in range(connections)
        ]
        threads = [
            threading.Thread(target=drive, args=(i, c), name=f"aura-sandbox-rate-{i}")
            for i, c in enumerate(clients)
        ]
        try:
            for thread in threads:
                thread.start()
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                errors.append("clients did not get ready")
            for thread in threads:
                thread.join(seconds + 10.0)
            elapsed = time.perf_counter() - window[0] if window else 0.0
        finally:
            for client in clients:
                client.close()
            self._state.bench_close(callout_id, token)
        if errors or elapsed <= 0:
            reason = errors[0] if errors else "no measurement"
            raise RuntimeError(f"max_rate: the sandbox API did not answer: {reason}")
        return sum(counts) / elapsed

    # ------------------------------------------------------------------ internals

    def _track(self, channel: str, conn: socket.socket) -> None:
        with self._conn_lock:
            self._conns[channel][conn] = threading.current_thread()
            if channel in self._closed_channels:  # accepted just before the listener closed
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _untrack(self, channel: str, conn: socket.socket) -> None:
        with self._conn_lock:
            self._conns[channel].pop(conn, None)

    def _cut_connections(self, channel: str) -> list[threading.Thread]:
        """Shut down open connections so blocked handler threads wake up and exit."""
        with self._conn_lock:  # held so a handler cannot close the socket under us
            self._closed_channels.add(channel)
            for conn in self._conns[channel]:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            return list(self._conns[channel].values())

    def _close_api(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        self._cut_connections("api")

    def _open_api(self) -> None:
        if self._api is None:
            with self._conn_lock:
                self._closed_channels.discard("api")
            self._api = _Listener(self, _ApiHandler, self.host, self.port, "api")


def run_sandbox(
    host: str,
    port: int,
    control_port: int,
    seed: SandboxSeed | None = None,
    *,
    verbose: bool = False,
) -> int:
    """Serve until SIGTERM/SIGINT (call from the main thread). Returns the exit code."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            sandbox = AuraSandbox(seed, host, port, control_port, verbose).start()
        except (OSError, ValueError) as exc:
            print(f"sandbox: cannot start: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            print(f"sandbox api {sandbox.base_url} control {sandbox.control_url}", flush=True)
            stop.wait()
        finally:
            sandbox.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


__all__ = ["AuraSandbox", "run_sandbox"]
