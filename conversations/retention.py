"""What is kept, and for how long: a deleted conversation is kept for Undo (models.RESTORE_WINDOW),
then removed for good with its messages, images (their files too, signals.py), and share links. Its
usage records stay, without the link to it: the accounting must not change when a member tidies up.
Sessions go when they expire, with the rows that tell whose they were.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib.sessions.models import Session
from django.utils import timezone

from conversations.models import RESTORE_WINDOW, Conversation, MemberSession, Message

# Conversations removed per pass. Small: the pass runs on the process's one database thread, which
# the chat's sockets and lease renewals share, and deleting loads every message of what goes.
PURGE_BATCH = 10


def purge_deleted_conversations() -> int:
    """Remove conversations deleted longer ago than the restore window; return how many went. A
    conversation whose reply is still being written waits for a later pass."""
    cutoff = timezone.now() - RESTORE_WINDOW
    expired = list(
        Conversation.objects.filter(deleted_at__lt=cutoff)
        .exclude(messages__status__in=Message.LIVE_STATUSES)
        .values_list("pk", flat=True)[:PURGE_BATCH]
    )
    if not expired:
        return 0
    # Checked again as it is deleted: an Undo may have landed since the ids were read.
    _, by_model = Conversation.objects.filter(pk__in=expired, deleted_at__lt=cutoff).delete()
    return by_model.get(Conversation._meta.label, 0)


# A login writes its MemberSession before the response saves the session itself: a younger row
# without a session may be one whose session is about to be saved.
SESSION_ROW_GRACE = timedelta(hours=1)
DATABASE_SESSION_ENGINES = (
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
)


def purge_ended_sessions() -> int:
    """Remove expired sessions (what `clearsessions` does) and the MemberSessions of sessions that are
    gone; return how many MemberSessions went. Only where sessions live in the database: elsewhere the
    table is empty, and every member's rows would look ended."""
    if settings.SESSION_ENGINE not in DATABASE_SESSION_ENGINES:
        return 0
    Session.objects.filter(expire_date__lt=timezone.now()).delete()
    ended = MemberSession.objects.filter(created_at__lt=timezone.now() - SESSION_ROW_GRACE).exclude(
        session_key__in=Session.objects.values("session_key")
    )
    deleted, _ = ended.delete()
    return deleted
