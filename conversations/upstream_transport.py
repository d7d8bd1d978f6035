"""The network layer under the upstream client: httpx's connection pool on plain asyncio streams.

httpx reads through httpcore's AnyIO backend, whose every socket read resumes and pauses the
transport: two epoll_ctl calls and a wakeup per read. A streamed reply is hundreds of small reads, so
this was half of the CPU chatsite spends per delta (bench/README.md). On asyncio's own streams the
socket stays registered and buffered data is returned without a loop turn; everything above the
socket (h11, the pool, httpx) is unchanged.

httpx does not yet take a network backend (encode/httpx#3749), so `transport()` builds its
AsyncHTTPTransport and gives it a pool made with this one. Connections through a proxy
(HTTPS_PROXY and the like) keep httpx's own transport.
"""

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection. Its read timeout is one timer per connection, moved on lazily: a timer per
    read (asyncio.timeout) cost more than the read itself once hundreds of streams were open."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._loop = asyncio.get_running_loop()
        self._reading: asyncio.Task[Any] | None = None
        self._read_by = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._timed_out = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        task = asyncio.current_task()
        if timeout is None or task is None:
            return await self._read(max_bytes)
        cancelling = task.cancelling()
        self._timed_out = False
        self._read_by = self._loop.time() + timeout
        if self._timer is None or self._read_by < self._timer_at:  # none yet, or one for a longer timeout
            self._arm()
        self._reading = task
        try:
            return await self._read(max_bytes)
        except asyncio.CancelledError:
            if self._timed_out and task.uncancel() <= cancelling:
                raise httpcore.ReadTimeout(f"Nothing was read in {timeout} s.") from None
            raise
        finally:
            self._reading = None

    async def _read(self, max_bytes: int) -> bytes:
        try:
            return await self._reader.read(max_bytes)
        except OSError as error:
            raise httpcore.ReadError(str(error) or type(error).__name__) from error

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = self._read_by
        self._timer = self._loop.call_at(self._read_by, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._reading is None:
            return  # the next read arms it again
        if self._loop.time() < self._read_by:  # a later read moved the deadline on
            self._arm()
            return
        self._timed_out = True
        self._reading.cancel()

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as error:
            raise httpcore.WriteTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.WriteError(str(error) or type(error).__name__) from error

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Closed at once, nothing left to flush: the pool closes a connection only when it is done
        # with it (a response read in part, an expired or broken connection). The socket itself is
        # closed by a callback, which the loop runs during the sleep.
        self._writer.transport.abort()
        await asyncio.sleep(0)

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as error:
            self._writer.transport.abort()
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:  # ssl.SSLError included
            self._writer.transport.abort()
            raise httpcore.ConnectError(str(error) or type(error).__name__) from error
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # The pool asks this of an idle connection: readable there means the server closed it.
            # asyncio has already read the close off the socket, so the stream is asked, not the socket.
            return self._reader.at_eof()
        names = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername"}
        if info in names:
            return self._writer.get_extra_info(names[info])
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[tuple[int, int, Any]] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ConnectError(str(error) or type(error).__name__) from error
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ConnectError(str(error) or type(error).__name__) from error
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, with its assignment pass made in one sweep of the connections.

    httpcore 1.0.9 counts the whole pool once for every idle connection in that pass (encode/httpcore
    #1035, still open), and the pass runs when a request starts and when it ends. With 50 replies
    streaming and their connections kept alive, that was 5,000 checks per reply: more CPU than the rest
    of the upstream request. The decisions are httpcore's, with two corrections: the keep-alive limit
    counts idle connections (httpcore counts all of them), and an idle connection goes to one waiting
    request per pass (httpcore offers it to all; the losers retry). HTTP/1.1 only, as built here.
    """

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        # A connection given to a request that has not started on it yet still looks idle.
        taken = {id(request.connection) for request in self._requests if request.connection is not None}
        closing: list[httpcore.AsyncConnectionInterface] = []
        kept, idle = [], []
        for connection in self._connections:
            if not connection.is_idle():  # in use or connecting: nothing to expire
                if not connection.is_closed():
                    kept.append(connection)
            elif connection.has_expired():  # past its keep-alive, or closed by the server
                closing.append(connection)
            else:
                kept.append(connection)
                if id(connection) not in taken:
                    idle.append(connection)
        surplus = len(idle) - self._max_keepalive_connections
        if surplus > 0:  # the longest kept go first, as in httpcore
            closing += idle[:surplus]
            dropped = {id(connection) for connection in idle[:surplus]}
            kept = [connection for connection in kept if id(connection) not in dropped]
            idle = idle[surplus:]
        self._connections = kept
        available = [connection for connection in idle if connection.is_available()]
        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            connection = next((c for c in available if c.can_handle_request(origin)), None)
            if connection is not None:
                available.remove(connection)
            else:
                if len(self._connections) >= self._max_connections:
                    # Full: an idle connection to another origin makes room, else the request waits.
                    if not available:
                        continue
                    spare = available.pop(0)
                    self._connections.remove(spare)
                    closing.append(spare)
                connection = self.create_connection(origin)
                self._connections.append(connection)
            pool_request.assign_to_connection(connection)
        return closing


def transport(*, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's HTTP/1.1 transport with its pool on AsyncioBackend."""
    built = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits)
    built._pool = ConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return built
