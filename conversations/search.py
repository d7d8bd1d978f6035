"""Finding a member's conversations by what their title or any of their messages says.

Plain substring matching (icontains), not PostgreSQL's full-text search: its default configurations
cut text into words at spaces and punctuation, so 北京 is never found inside 今天北京的天气怎么样. On
PostgreSQL, GIN trigram indexes over the expressions icontains produces (migration 0002) serve these
queries once they have three characters or more; SQLite scans the member's rows.
"""

import re
from typing import Any

from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Greatest, StrIndex, Substr, Upper

from conversations.models import Conversation, ConversationQuerySet, Message

MAX_QUERY_CHARS = 200
SNIPPET_CHARS = 120
# How much text before the match a snippet keeps, so the match shows with a little context.
SNIPPET_LEAD_CHARS = 30


def matching(user: Any, query: str) -> ConversationQuerySet:
    """The member's conversations whose title or any message contains `query`, in any case."""
    mine = Conversation.objects.for_user(user)
    by_title = mine.filter(title__icontains=query).values("pk")
    by_message = Message.objects.filter(conversation__in=mine, text__icontains=query).values(
        "conversation_id"
    )
    # One IN over a UNION rather than "title matches OR id IN (...)": PostgreSQL turns it into a
    # join and weighs both ways to run it, the trigram index for a rare word, the member's own
    # messages for a common one. Under an OR it takes the subquery's cheapest start and never the index.
    return mine.filter(pk__in=by_title.union(by_message))


def snippets(conversations: list[Conversation], query: str) -> dict[int, str]:
    """A short excerpt of the newest message matching `query` in each conversation, by id.

    One query for the whole page: a conversation whose only match is its title has none. Only a
    window of text around the match leaves the database, however long the message.
    """
    position = StrIndex(Upper("text"), Upper(Value(query)))
    window = Substr("text", Greatest(position - SNIPPET_CHARS, Value(1)), 3 * SNIPPET_CHARS)
    newest_match = (
        Message.objects.filter(conversation=OuterRef("pk"), text__icontains=query)
        .order_by("-created_at", "-pk")
        .values_list(window)[:1]
    )
    rows = (
        Conversation.objects.filter(pk__in=[conversation.pk for conversation in conversations])
        .annotate(match=Subquery(newest_match))
        .values_list("pk", "match")
    )
    return {pk: excerpt(text, query) for pk, text in rows if text}


def excerpt(text: str, query: str) -> str:
    """About SNIPPET_CHARS of `text` on one line around the first match of `query`, as plain text."""
    flat = " ".join(text.split())
    found = re.search(re.escape(" ".join(query.split())), flat, re.IGNORECASE)
    start = max(0, found.start() - SNIPPET_LEAD_CHARS) if found else 0
    end = min(len(flat), start + SNIPPET_CHARS)
    start = max(0, end - SNIPPET_CHARS)  # a match near the end still gets a full-length snippet
    return ("…" if start else "") + flat[start:end].strip() + ("…" if end < len(flat) else "")
