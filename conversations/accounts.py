"""Accounts without e-mail: one-time links (setup, invite, reset), member sessions, login throttling."""

import hashlib
from collections.abc import Iterable
from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.models import AbstractUser
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from conversations import throttle
from conversations.models import AccountLink, MemberSession, hash_token

# Printed at every start while no admin exists, so it need not live long.
SETUP_LINK_HOURS = 24

_PAGE_OF_KIND = {
    AccountLink.Kind.SETUP: "setup",
    AccountLink.Kind.INVITE: "accept_invite",
    AccountLink.Kind.RESET: "reset_password",
}


def _active_admin_exists() -> bool:
    return get_user_model().objects.filter(is_superuser=True, is_active=True).exists()


# --- One-time links -------------------------------------------------------------------------------


def link_path(kind: str, token: str) -> str:
    """The site-relative address of the page a link opens."""
    return reverse(_PAGE_OF_KIND[kind], args=[token])


def ensure_setup_link(base_url: str) -> str | None:
    """A fresh setup link while no active admin exists (older unused ones stop working), else None."""
    if _active_admin_exists():
        return None
    with transaction.atomic():
        AccountLink.objects.filter(kind=AccountLink.Kind.SETUP, used_at__isnull=True).delete()
        _, token = AccountLink.issue(AccountLink.Kind.SETUP, hours=SETUP_LINK_HOURS)
    return base_url.rstrip("/") + link_path(AccountLink.Kind.SETUP, token)


def issue_invite(
    created_by: AbstractUser, *, make_staff: bool = False, hours: int | None = None
) -> tuple[AccountLink, str]:
    """Create an invite link; return it and its token, which is stored nowhere."""
    return AccountLink.issue(
        AccountLink.Kind.INVITE, hours=hours, make_staff=make_staff, created_by=created_by
    )


@transaction.atomic
def issue_reset(user: AbstractUser, created_by: AbstractUser) -> tuple[AccountLink, str]:
    """Create a member's reset link, replacing any earlier unused one; return it and its token."""
    AccountLink.objects.filter(kind=AccountLink.Kind.RESET, user=user, used_at__isnull=True).delete()
    return AccountLink.issue(AccountLink.Kind.RESET, user=user, created_by=created_by)


def find_link(kind: str, token: str) -> AccountLink | None:
    """The usable link of this kind with this token, or None whether it is unknown, used or expired."""
    link = (
        AccountLink.objects.filter(
            kind=kind, token_hash=hash_token(token), used_at__isnull=True, expires_at__gt=timezone.now()
        )
        .select_related("user")
        .first()
    )
    if link is None:
        return None
    # Setup makes the first admin only; a reset never revives a deactivated member.
    if kind == AccountLink.Kind.SETUP and _active_admin_exists():
        return None
    if kind == AccountLink.Kind.RESET and (link.user is None or not link.user.is_active):
        return None
    return link


def claim_link(kind: str, token: str) -> AccountLink | None:
    """Mark a usable link used and return it; None if it is not usable or another request got it first.

    Call inside the transaction that does what the link allows, so a failure leaves the link unused.
    """
    link = find_link(kind, token)
    if link is None:
        return None
    # The conditional UPDATE is the lock: of two requests racing with one link, the database lets only
    # one of them change the row, and the other sees 0 rows updated.
    now = timezone.now()
    claimed = AccountLink.objects.filter(pk=link.pk, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now
    )
    if not claimed:
        return None
    link.used_at = now
    return link


@transaction.atomic
def create_first_admin(token: str, username: str, password: str) -> AbstractUser | None:
    """Use a setup link to create a superuser; None if the link is not usable."""
    if claim_link(AccountLink.Kind.SETUP, token) is None:
        return None
    return get_user_model().objects.create_superuser(username=username, password=password)


@transaction.atomic
def accept_invite(token: str, username: str, password: str) -> AbstractUser | None:
    """Use an invite link to create a member; None if the link is not usable."""
    link = claim_link(AccountLink.Kind.INVITE, token)
    if link is None:
        return None
    user = get_user_model().objects.create_user(
        username=username, password=password, is_staff=link.make_staff
    )
    link.user = user
    link.save(update_fields=["user"])
    return user


@transaction.atomic
def reset_password(token: str, password: str) -> AbstractUser | None:
    """Use a reset link to set the member's password and end all their sessions; None if not usable."""
    link = claim_link(AccountLink.Kind.RESET, token)
    if link is None:
        return None
    user = link.user
    user.set_password(password)
    user.save(update_fields=["password"])
    end_sessions(user)
    return user


# --- Sessions -------------------------------------------------------------------------------------


def _delete_sessions(session_keys: Iterable[str]) -> None:
    # Through the configured engine, so a cached or cached_db session leaves the cache too.
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    for key in session_keys:
        store_class().delete(key)


def end_sessions(user: AbstractUser, *, keep: str | None = None) -> None:
    """End every session the member has (but the one keyed `keep`), wherever the engine keeps it."""
    rows = MemberSession.objects.filter(user=user)
    if keep:
        rows = rows.exclude(session_key=keep)
    keys = list(rows.values_list("session_key", flat=True))
    if not keys:
        return
    _delete_sessions(keys)
    MemberSession.objects.filter(session_key__in=keys).delete()


def forget_session(session_key: str | None) -> None:
    """Drop the record of a session that is ending anyway (logout)."""
    if session_key:
        MemberSession.objects.filter(session_key=session_key).delete()


def password_changed(request: HttpRequest, user: AbstractUser) -> None:
    """Keep this session logged in after the member changed their password; end all their others."""
    update_session_auth_hash(request, user)
    # update_session_auth_hash gave this session a new key, which must stay known as the member's.
    new_key = request.session.session_key
    MemberSession.objects.update_or_create(session_key=new_key, defaults={"user": user})
    end_sessions(user, keep=new_key)


# --- Login throttling -----------------------------------------------------------------------------


def _throttle_keys(username: str, address: str) -> list[str]:
    # Hashed: usernames and forwarded addresses may hold characters some cache backends refuse in keys.
    # Usernames are folded so that "Bob" and "bob" share one counter.
    def key(kind: str, value: str) -> str:
        return f"login-failures:{kind}:{hashlib.sha256(value.encode()).hexdigest()}"

    keys = [key("user", username.casefold())]
    if address:
        keys.append(key("address", address))
    return keys


def login_throttled(username: str, address: str) -> bool:
    """Whether the account or the client address has used up its failed attempts for now."""
    counts = cache.get_many(_throttle_keys(username, address))
    return any(count >= settings.LOGIN_THROTTLE_ATTEMPTS for count in counts.values())


def record_login_failure(username: str, address: str) -> None:
    """Count a failed login against the account and the address, for LOGIN_THROTTLE_WINDOW seconds."""
    for key in _throttle_keys(username, address):
        throttle.count_failure(key, settings.LOGIN_THROTTLE_WINDOW)


def clear_login_failures(username: str) -> None:
    """Forget the account's failed logins (the address keeps its count)."""
    cache.delete(_throttle_keys(username, "")[0])
