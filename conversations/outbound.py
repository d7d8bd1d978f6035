"""Outgoing HTTP calls to addresses an admin typed in (HTTP tools), guarded against reaching inside.

A model chooses when a tool is called and with what arguments, so a tool's endpoint must not become
a way into the server's own network (server-side request forgery). Every hop, the first and each
redirect, is checked the same way:

1. the host is resolved (getaddrinfo on a thread, as the resolver blocks);
2. if any of its addresses is private, loopback, link-local, multicast, reserved, unspecified, or such
   an address wrapped in IPv6 (IPv4-mapped, 6to4, Teredo, NAT64), the call is refused, unless the
   admin allowed private addresses for the tool's own host (never for a host a redirect names);
3. the connection goes to the address that was checked, not to a name resolved again later (DNS
   rebinding): the URL carries the IP, the Host header and TLS's SNI and certificate check the name.

Redirects are followed by hand (at most MAX_REDIRECTS), each one checked again; a secret header is
dropped when a redirect leaves the origin. The whole call has one deadline, and the response body is
read as a stream that stops at the size limit.
"""

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

MAX_REDIRECTS = 3
REDIRECTS = {301, 302, 303, 307, 308}
NAT64 = ipaddress.ip_network("64:ff9b::/96")

logger = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundError(Exception):
    """The call was refused or failed; the message says why in words a model (and an admin) can use."""


@dataclass(frozen=True)
class Response:
    status: int
    text: str


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _embedded(address: Address) -> list[Address]:
    """The address and any IPv4 address an IPv6 form carries, each of which must pass."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            found.append(address.ipv4_mapped)
        if address.sixtofour:
            found.append(address.sixtofour)
        if address.teredo:
            found.extend(address.teredo)
        if address in NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_public(address: Address) -> bool:
    """Whether an address is on the public internet, whatever IPv6 form wraps it."""
    for candidate in _embedded(address):
        if (
            not candidate.is_global
            or candidate.is_private
            or candidate.is_loopback
            or candidate.is_link_local
            or candidate.is_multicast
            or candidate.is_reserved
            or candidate.is_unspecified
            or (candidate.version == 6 and candidate.is_site_local)
        ):
            return False
    return True


async def resolve(host: str, port: int) -> list[Address]:
    """The addresses of a host name (or the literal address itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OutboundError(f"The host {host} could not be resolved.") from error
    addresses = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])  # without an IPv6 zone
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundError(f"The host {host} has no address.")
    return addresses


async def checked_address(host: str, port: int, allow_private: bool) -> Address:
    """The address to connect to; refused when any address of the host is not public (a name with
    one public and one private address could otherwise be steered to the private one)."""
    addresses = await resolve(host, port)
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                # The address goes to the log only: the message reaches the model and the member, and a
                # redirect could otherwise learn what internal names resolve to.
                logger.warning("outbound call to %s refused: %s is not public", host, address)
                raise OutboundError(f"The address of {host} is not public; the call was refused.")
    return addresses[0]


async def post_json(
    url: str,
    payload: Any,
    *,
    headers: dict[str, str],
    secret_headers: dict[str, str],
    allow_private: bool,
    timeout: float,
    limit: int,
) -> Response:
    """POST `payload` as JSON and return the response, following checked redirects.

    allow_private applies to the host of `url` only. secret_headers go to that origin only.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _post(url, payload, headers, secret_headers, allow_private, timeout, limit)
    except TimeoutError:
        raise OutboundError(f"The call took longer than {timeout:g} s.") from None


async def _post(
    url: str,
    payload: Any,
    headers: dict[str, str],
    secret_headers: dict[str, str],
    allow_private: bool,
    timeout: float,
    limit: int,
) -> Response:
    first = httpx.URL(url)
    target, method = first, "POST"
    async with httpx.AsyncClient(
        verify=_ssl_context(), trust_env=False, follow_redirects=False, timeout=timeout
    ) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            if target.scheme not in ("http", "https") or not target.host:
                raise OutboundError(f"Only http and https addresses can be called, not {target}.")
            same_origin = (target.scheme, target.host, target.port) == (first.scheme, first.host, first.port)
            port = target.port or (443 if target.scheme == "https" else 80)
            address = await checked_address(target.host, port, allow_private and target.host == first.host)
            # Uncompressed: the size limit then counts what arrives, not a small gzip bomb's output.
            request_headers = {
                **headers,
                "Host": target.netloc.decode("ascii"),
                "Accept-Encoding": "identity",
            }
            if same_origin:
                request_headers.update(secret_headers)
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = client.build_request(
                method,
                target.copy_with(host=str(address)),
                headers=request_headers,
                json=payload if method == "POST" else None,
                extensions=extensions,
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.TimeoutException:
                raise OutboundError(f"The call took longer than {timeout:g} s.") from None
            except httpx.HTTPError as error:
                raise OutboundError(f"The call to {target.host} failed: {error}") from None
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECTS and location:
                    target = target.join(location)
                    if response.status_code in (301, 302, 303):
                        method = "GET"  # as browsers do; 307 and 308 keep the method and body
                    continue
                return Response(response.status_code, await _read(response, limit))
            finally:
                await response.aclose()
    raise OutboundError(f"More than {MAX_REDIRECTS} redirects.")


async def _read(response: httpx.Response, limit: int) -> str:
    """The body as text, read no further than `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise OutboundError(f"The response is larger than {limit} bytes.")
    chunks, size = [], 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise OutboundError(f"The response is larger than {limit} bytes.")
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise OutboundError("The response stopped arriving in time.") from None
    except httpx.HTTPError as error:
        raise OutboundError(f"The response could not be read: {error}") from None
    return b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
