"""Share a conversation as a link: snapshots, lookup by token, revocation, and continuing from a share.

A link holds a random token (256 bits), looked up by its hash (models.hash_token, as for account
links) and kept encrypted for its owner to copy again, and a snapshot: the pks of the finished messages of the selected path when it was
taken. The shared page shows those messages and nothing newer; its images are served under the token
only when a message of the snapshot names them. A revoked, expired or unknown token is one and the
same miss (share_views.missing), and misses are counted per client address and for the whole site.
docs/sharing.md describes it for people.
"""

import ipaddress
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext

from conversations import catalog, events, secretbox, throttle
from conversations.messaging import Tree
from conversations.models import Attachment, Conversation, Message, ShareLink, hash_token

logger = logging.getLogger(__name__)

# The expiries the chat's dialog offers, in days; None is never.
EXPIRY_DAYS = (None, 1, 7, 30)
TOKEN_BYTES = 32


class ShareRefused(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


# --- Making, updating and revoking links ----------------------------------------------------------


def snapshot_ids(conversation: Conversation) -> list[int]:
    """The selected path, root first, up to (not including) a reply still being written: its text is
    not final, and a share must not grow after it was made."""
    tree = Tree.of(conversation)
    ids = []
    for pk in tree.path(conversation.current_leaf_id):
        if tree.by_id[pk].status in Message.LIVE_STATUSES:
            break
        ids.append(pk)
    return ids


def create_link(
    conversation: Conversation, audience: str, expires_in_days: int | None = None
) -> tuple[ShareLink, str]:
    """Share the conversation as it is now; return the link and its token."""
    ids = snapshot_ids(conversation)
    if not ids:
        raise ShareRefused("empty", "nothing to share")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = timezone.now()
    link = ShareLink.objects.create(
        conversation=conversation,
        token_hash=hash_token(token),
        token_encrypted=secretbox.encrypt(token),
        audience=audience,
        message_ids=ids,
        title=conversation.title,
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    return link, token


def update_snapshot(link: ShareLink) -> ShareLink:
    """Take the snapshot again (same address): the messages and title of the conversation now."""
    ids = snapshot_ids(link.conversation)
    if not ids:
        raise ShareRefused("empty", "nothing to share")
    link.message_ids = ids
    link.title = link.conversation.title
    link.updated_at = timezone.now()
    link.save(update_fields=["message_ids", "title", "updated_at"])
    return link


def revoke(link: ShareLink) -> None:
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.token_encrypted = ""  # its address is of no further use to anyone
        link.save(update_fields=["revoked_at", "token_encrypted"])


def revoke_all(links: QuerySet) -> int:
    """Revoke these links at once (the admin's action, a deleted conversation's); how many were not yet."""
    return links.filter(revoked_at__isnull=True).update(revoked_at=timezone.now(), token_encrypted="")


def revoke_links_of(conversation: Conversation) -> int:
    """Revoke every link of a conversation (it is being deleted); Undo does not bring them back."""
    return revoke_all(ShareLink.objects.filter(conversation=conversation))


def state_of(link: ShareLink) -> str:
    """As ShareLinkQuerySet's revoked(), expired() and usable(), for a link in hand."""
    if link.revoked_at is not None or not link.conversation.owner.is_active:
        return "revoked"  # a deactivated owner's links answer 404 like revoked ones
    if link.expires_at is not None and link.expires_at <= timezone.now():
        return "expired"
    return "active"


def link_path(link: ShareLink) -> str | None:
    """The address to copy, for a link that still works; its owner's pages only (the admin never)."""
    if state_of(link) != "active":
        return None
    try:
        token = link.token
    except InvalidToken:
        # Encrypted under an earlier ENCRYPTION_KEY: the link still works, its address is lost.
        return None
    return reverse("shared_page", args=[token])


def link_data(link: ShareLink) -> dict[str, Any]:
    """A link as its owner's pages see it."""
    return {
        "id": link.pk,
        "conversation": str(link.conversation.public_id),
        "title": link.title,
        "audience": link.audience,
        "messages": len(link.message_ids),
        "created_at": link.created_at.isoformat(),
        "updated_at": link.updated_at.isoformat(),
        "expires_at": link.expires_at.isoformat() if link.expires_at else None,
        "state": state_of(link),
        "path": link_path(link),
    }


# --- Reading a link -------------------------------------------------------------------------------


def find_link(token: str) -> ShareLink | None:
    """The usable link with this token: not revoked, not expired, its conversation not deleted and
    its owner active. None for all the rest alike."""
    if not token or len(token) > 100:
        return None
    return (
        ShareLink.objects.usable()
        .filter(token_hash=hash_token(token), conversation__deleted_at__isnull=True)
        .select_related("conversation__owner")
        .first()
    )


def may_view(link: ShareLink, user: Any) -> bool:
    return link.audience == ShareLink.Audience.ANYONE or (user.is_authenticated and user.is_active)


def shared_messages(link: ShareLink) -> list[Message]:
    """The snapshot's messages that still exist, in path order; not system messages (an import keeps a
    conversation's instructions so): they are the owner's, not part of a share, neither shown nor
    copied on Continue."""
    rows = Message.objects.in_bulk(link.message_ids)
    return [
        rows[pk]
        for pk in link.message_ids
        if pk in rows
        and rows[pk].conversation_id == link.conversation_id
        and rows[pk].role != Message.Role.SYSTEM
    ]


def page_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """What the shared page's script renders: numbered 1, 2, 3 instead of the owner's pks."""
    return [
        {
            "id": index,
            "parent": index - 1 if index > 1 else None,
            "role": message.role,
            "status": message.status,
            "parts": message.parts,
            "error": {"code": message.error_code, "detail": gettext(message.error_detail)}
            if message.error_code
            else None,
        }
        for index, message in enumerate(messages, start=1)
    ]


def image_ids(messages: list[Message]) -> set[str]:
    return {
        str(part.get("attachment"))
        for message in messages
        for part in message.parts
        if isinstance(part, dict) and part.get("type") == "image"
    }


def shared_attachment(link: ShareLink, public_id: Any) -> Attachment | None:
    """An image of the snapshot: named by one of its messages and stored with its conversation."""
    if str(public_id) not in image_ids(shared_messages(link)):
        return None
    return Attachment.objects.filter(conversation_id=link.conversation_id, public_id=public_id).first()


def display_name(user: Any) -> str:
    """The sharer as the page names them: never an e-mail address, which a username may be."""
    return user.get_full_name() or user.get_username().split("@", 1)[0]


# --- Guessing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MissCounter:
    key: str
    limit: int


def guesser(address: str, user: Any) -> str:
    """Who is looking a token up, as the limits count them: a member by account, and not towards the
    site-wide limit (so that anonymous guessers cannot lock the team out of its links); anyone else by
    client address, an IPv6 one by its /64 (a single host commonly holds a whole /64)."""
    if user.is_authenticated:
        return f"member:{user.pk}"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address:{address}"
    if ip.version == 6:
        return f"address:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address:{ip}"


def _own_counter(guesser: str) -> MissCounter:
    # Hashed: a forwarded address may hold characters some cache backends refuse in keys.
    return MissCounter(f"share-misses:{hash_token(guesser)}", settings.SHARE_MISSES_PER_ADDRESS)


SITE_COUNTER_KEY = "share-misses:all"


def _counters(guesser: str) -> list[MissCounter]:
    counters = [_own_counter(guesser)]
    if not guesser.startswith("member:"):
        counters.append(MissCounter(SITE_COUNTER_KEY, settings.SHARE_MISSES_GLOBAL))
    return counters


def guesser_throttled(guesser: str) -> bool:
    """Whether this guesser (see guesser()) missed too often in the current window: then every share
    address answers it 429, the right token included."""
    counter = _own_counter(guesser)
    return cache.get(counter.key, 0) >= counter.limit


def record_miss(guesser: str) -> bool:
    """Count a lookup that found no usable link, for SHARE_MISS_WINDOW seconds from the first; return
    whether this miss is past a limit (then it answers 429). Decided by the count the miss itself made,
    so parallel guesses cannot slip past the limit: the guesser's own, or for anonymous guessers the
    site-wide one too (a distributed scan: its misses are refused, while working links still open)."""
    over = False
    for counter in _counters(guesser):
        count = throttle.count_failure(counter.key, settings.SHARE_MISS_WINDOW)
        over = over or count > counter.limit
    return over


# --- Continuing from a share ----------------------------------------------------------------------


def _copy_attachment(attachment: Attachment, user: Any, conversation: Conversation) -> Attachment:
    """The member's own copy of an image: a new row and file, so that the owner's stays theirs."""
    with attachment.file.open("rb") as source:
        content = source.read()
    extension = attachment.file.name[attachment.file.name.rfind(".") :]
    return Attachment.objects.create(
        owner=user,
        conversation=conversation,
        file=ContentFile(content, name=f"image{extension}"),
        content_type=attachment.content_type,
        width=attachment.width,
        height=attachment.height,
        size=attachment.size,
    )


@transaction.atomic
def continue_from(link: ShareLink, user: Any) -> Conversation:
    """A new conversation of the member's holding a copy of the snapshot's path; the original is left
    as it was. Its images are copied too (new rows and files the member owns). The owner's system
    prompt, parameters and tools are not part of a share and are not copied."""
    messages = shared_messages(link)
    source = link.conversation
    usable = source.model_id is not None and catalog.usable_model(user, source.model_id) is not None
    conversation = Conversation.objects.create(
        owner=user, title=link.title, model_id=source.model_id if usable else None
    )
    images = {
        str(attachment.public_id): attachment
        for attachment in Attachment.objects.filter(conversation=source, public_id__in=image_ids(messages))
    }
    copies: dict[str, Attachment] = {}
    parent = None
    for message in messages:
        parts = []
        for part in message.parts:
            if isinstance(part, dict) and part.get("type") == "image":
                original = images.get(str(part.get("attachment")))
                if original is None:
                    continue  # gone since the snapshot
                if str(original.public_id) not in copies:
                    try:
                        copies[str(original.public_id)] = _copy_attachment(original, user, conversation)
                    except OSError:
                        logger.warning("image %s of a share is missing its file; left out", original.pk)
                        continue
                part = {**part, "attachment": str(copies[str(original.public_id)].public_id)}
            parts.append(part)
        copy = Message(
            conversation=conversation,
            parent=parent,
            role=message.role,
            status=message.status,
            finish_reason=message.finish_reason,
            error_code=message.error_code,
            error_detail=message.error_detail,
            model_id=message.model_id,
        )
        copy.set_parts(parts)
        copy.save()
        parent = copy
    conversation.current_leaf = parent
    conversation.save(update_fields=["current_leaf"])
    events.announce_conversation("created", conversation)
    return conversation


def expiry_choice(value: Any) -> int | None:
    """The number of days the dialog sent, one of EXPIRY_DAYS; anything else is refused."""
    if value is None or (type(value) is int and value in EXPIRY_DAYS):
        return value
    raise ShareRefused("bad_expiry", "expiry")
