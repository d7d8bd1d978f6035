"""Whether a socket's session is still the one its user logged in with."""

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare


def is_current(session_key: str | None, user: Any) -> bool:
    """False once the session is gone (logout, expiry, deactivation) or no longer matches the user
    (password changed elsewhere), the checks Django's own authentication makes on each request."""
    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = store.load()
    if str(data.get(SESSION_KEY)) != str(user.pk) or BACKEND_SESSION_KEY not in data:
        return False
    fresh = get_user_model().objects.filter(pk=user.pk, is_active=True).first()
    if fresh is None:
        return False
    return constant_time_compare(data.get(HASH_SESSION_KEY, ""), fresh.get_session_auth_hash())
