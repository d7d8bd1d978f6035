"""The network layer under the upstream client (upstream_transport.py), against small servers of its
own over real sockets: connections the server closed, TLS, and the read timeout's one timer."""

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conversations import upstream, upstream_transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.decode("latin-1").lower().splitlines():
        if line.startswith("content-length:"):
            await reader.readexactly(int(line.split(":", 1)[1]))


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
REPLY = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}\n\n'
DONE = b"data: [DONE]\n\n"
END_OF_BODY = b"0\r\n\r\n"


async def headers_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(10)


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.port = 0


@contextlib.asynccontextmanager
async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=ssl_context)
    server.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield server


def client(
    ssl_context: ssl.SSLContext | None = None, read: float = 5.0, keep_alive: int = 10
) -> httpx.AsyncClient:
    context = ssl_context or upstream._ssl_context()
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=keep_alive, keepalive_expiry=30)
    return httpx.AsyncClient(
        transport=upstream_transport.transport(ssl_context=context, limits=limits),
        timeout=httpx.Timeout(5.0, read=read),
    )


async def test_the_upstream_client_reads_through_this_transport(upstream_client):
    pool = upstream.get_client()._transport._pool
    assert isinstance(pool._network_backend, upstream_transport.AsyncioBackend)


async def stream_reply(port: int) -> str:
    endpoint = upstream.Endpoint(base_url=f"http://127.0.0.1:{port}/v1")
    payload = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    pieces = [piece async for piece in upstream.stream_chat(endpoint, payload, request_id="r")]
    return "".join(p["choices"][0]["delta"].get("content", "") for p in pieces if p.get("choices"))


async def test_the_next_reply_reuses_the_connection_of_the_last(upstream_client, settings):
    """After [DONE] the client reads on to the end of the body, which a provider sends a moment
    later, so that the connection goes back to the pool: one TLS handshake fewer per reply."""

    async def stream_replies(reader, writer):
        while True:
            await read_request(reader)
            writer.write(STREAM_HEAD + chunk(REPLY) + chunk(DONE))
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(END_OF_BODY)
            await writer.drain()

    async with serve(stream_replies) as server:
        assert [await stream_reply(server.port) for _ in range(3)] == ["hi"] * 3
        assert server.connections == 1


async def test_a_server_that_keeps_the_body_open_after_done_is_cut_off_at_once(upstream_client, settings):
    async def done_then_open(reader, writer):
        await read_request(reader)
        writer.write(STREAM_HEAD + chunk(REPLY) + chunk(DONE))
        await writer.drain()
        await asyncio.sleep(10)

    async with serve(done_then_open) as server:
        started = time.monotonic()
        assert await stream_reply(server.port) == "hi"
        assert time.monotonic() - started < upstream.END_OF_BODY_SECONDS + 0.5
        assert await stream_reply(server.port) == "hi"
        assert server.connections == 2  # the first connection was closed mid-body, not reused


async def slow_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        await asyncio.sleep(0.05)  # a burst's requests overlap
        writer.write(OK)
        await writer.drain()


async def burst(http: httpx.AsyncClient, port: int, size: int) -> None:
    responses = await asyncio.gather(*(http.get(f"http://127.0.0.1:{port}/") for _ in range(size)))
    assert [response.text for response in responses] == ["ok"] * size
    await asyncio.sleep(0.05)  # every response has given its connection back


async def test_a_burst_of_requests_reuses_the_pool_s_idle_connections():
    """Each idle connection serves one request of the burst; those over the keep-alive limit are closed."""
    async with serve(slow_answers) as server, client(keep_alive=5) as http:
        for expected_connections in (20, 35, 50):  # 20, then 5 kept and 15 new, twice
            await burst(http, server.port, 20)
            assert server.connections == expected_connections
        pool = http._transport._pool
        assert sum(connection.is_idle() for connection in pool.connections) == 5


async def test_what_a_request_costs_the_pool_grows_with_its_size_not_its_square(monkeypatch):
    looks = 0
    is_idle = httpcore.AsyncHTTPConnection.is_idle

    def counted(connection: httpcore.AsyncHTTPConnection) -> bool:
        nonlocal looks
        looks += 1
        return is_idle(connection)

    monkeypatch.setattr(httpcore.AsyncHTTPConnection, "is_idle", counted)

    async def looks_per_request(size: int) -> float:
        nonlocal looks
        async with serve(slow_answers) as server, client(keep_alive=size) as http:
            await burst(http, server.port, size)  # opens `size` connections, kept alive
            looks = 0
            await burst(http, server.port, size)  # reuses them all
        return looks / size

    small, large = await looks_per_request(10), await looks_per_request(40)
    # Four times the connections: four times the looks per request here, sixteen in httpcore's pool,
    # which looked at every connection once for each idle one.
    assert large < 8 * small


async def test_a_kept_alive_connection_the_server_closed_is_not_reused():
    async def answer_once_then_close(reader, writer):
        await read_request(reader)
        writer.write(OK)  # HTTP/1.1 without "Connection: close": the client keeps it for the next request
        await writer.drain()

    async with serve(answer_once_then_close) as server:
        async with client() as http:
            first = await http.get(f"http://127.0.0.1:{server.port}/")
            await asyncio.sleep(0.1)  # the server's close reaches the idle connection
            second = await http.get(f"http://127.0.0.1:{server.port}/")
        assert (first.text, second.text) == ("ok", "ok")
        assert server.connections == 2


async def test_a_connection_kept_alive_serves_the_next_request():
    async with serve(keep_answering) as server:
        async with client() as http:
            for _ in range(3):
                assert (await http.get(f"http://127.0.0.1:{server.port}/")).text == "ok"
        assert server.connections == 1


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatsite test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_tls_connections_verify_the_certificate(tmp_path):
    cert_path, key_path = certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    trusting = ssl.create_default_context(cafile=str(cert_path))

    async with serve(keep_answering, server_context) as server:
        url = f"https://127.0.0.1:{server.port}/"
        async with client(trusting) as http:
            assert (await http.get(url)).text == "ok"
            assert (await http.get(url)).text == "ok"
        assert server.connections == 1
        async with client() as http:  # the public CAs do not vouch for this certificate
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(url)


async def test_a_silent_server_is_a_read_timeout_and_the_task_goes_on():
    async with serve(headers_then_silence) as server:
        async with client(read=0.3) as http:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
                    await response.aread()
            assert 0.25 < time.monotonic() - started < 2
        # The timeout's cancellation was taken back: nothing is left to hit the task later.
        assert asyncio.current_task().cancelling() == 0
        await asyncio.sleep(0.01)


async def test_the_read_timeout_counts_from_each_read_not_from_the_first():
    async def slow_chunks(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):  # 1.2 s in all, each piece well within the 0.5 s read timeout
            await asyncio.sleep(0.2)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serve(slow_chunks) as server:
        async with client(read=0.5) as http:
            response = await http.get(f"http://127.0.0.1:{server.port}/")
        assert response.text == "x" * 6


async def test_a_shorter_read_timeout_holds_on_a_connection_that_had_a_longer_one():
    async def answer_then_fall_silent(reader, writer):
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await headers_then_silence(reader, writer)

    async with serve(answer_then_fall_silent) as server, client() as http:
        url = f"http://127.0.0.1:{server.port}/"
        assert (await http.get(url, timeout=httpx.Timeout(5.0, read=30.0))).text == "ok"
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            async with http.stream("GET", url, timeout=httpx.Timeout(5.0, read=0.3)) as response:
                await response.aread()
        assert time.monotonic() - started < 2
        assert server.connections == 1  # the same connection, whose timer was set for 30 s


async def test_cancelling_a_reading_task_stays_a_cancellation():
    async with serve(headers_then_silence) as server, client(read=5) as http:

        async def read_all() -> None:
            async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
                await response.aread()

        task = asyncio.create_task(read_all())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_refused_connection_is_a_connect_error(nothing_listening):
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{nothing_listening}/")
