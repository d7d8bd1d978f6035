"""The address a request came from, believing X-Forwarded-For only from trusted proxies."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _is_trusted(address: str) -> bool:
    """Whether an address is one of settings.TRUSTED_PROXIES (single addresses or networks)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in settings.TRUSTED_PROXIES:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the nearest untrusted hop of X-Forwarded-For when the peer is a trusted proxy.

    The header is read from the right: each trusted proxy appends the address it saw, so the first
    untrusted hop is the one the outermost trusted proxy talked to. Anything left of it was written
    by the client and proves nothing.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    if not _is_trusted(remote):
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop):
            return hop
    # Every hop is a trusted proxy: the leftmost is as close to the client as is known.
    return hops[0] if hops else remote
