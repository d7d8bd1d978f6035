"""Failures counted in the cache over a window (LocMem, or Redis shared by every process): failed logins
(accounts.py) and share-link misses (sharing.py)."""

from django.core.cache import cache


def count_failure(key: str, window: int) -> int:
    """One more failure under `key`; the window runs `window` seconds from the first. Returns the
    count with this one: a caller that decides by it decides exactly, however many run at once."""
    # add() creates the counter with its expiry only if absent; incr() is atomic on shared caches, so
    # concurrent failures each count.
    if cache.add(key, 1, timeout=window):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # it expired between add() and incr()
        cache.add(key, 1, timeout=window)
        return 1
