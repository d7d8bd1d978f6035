"""The sidebar's pages of conversations: newest first, keyset paged on (updated_at, id), so that a
conversation moving up while the member scrolls is neither skipped nor shown twice in one listing."""

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from django.db.models import F, Q, QuerySet, Window
from django.db.models.functions import RowNumber

from conversations import events, search
from conversations.models import Conversation, Folder

PAGE_SIZE = 50


def sidebar_page(
    user: Any, before: tuple[datetime, int] | None = None
) -> tuple[list[Conversation], str | None]:
    """One page of the member's conversations, newest first, and the cursor of the next page.

    Pinned ones come whole on the first page (they are few and shown in their own section); the
    others outside folders are keyset paged on (updated_at, id), so a conversation that moves up
    while the member scrolls is neither skipped twice nor shown twice within one listing. Those in
    folders come with their folders (folder_pages()).
    """
    mine = Conversation.objects.for_user(user).order_by("-updated_at", "-pk")
    pinned = list(mine.filter(pinned=True)) if before is None else []
    page, next_cursor = keyset_page(mine.filter(pinned=False, folder=None), before)
    return pinned + page, next_cursor


def folder_pages(user: Any) -> tuple[list[dict[str, Any]], list[Conversation]]:
    """The member's folders, each with the cursor of its next page, and the first page of every
    folder's conversations (pinned ones stay in their own section), in two queries."""
    folders = list(Folder.objects.for_user(user))
    newest_first = [F("updated_at").desc(), F("pk").desc()]
    ranked = (
        Conversation.objects.for_user(user)
        .filter(pinned=False, folder__isnull=False)
        .annotate(rank=Window(RowNumber(), partition_by=[F("folder")], order_by=newest_first))
        .filter(rank__lte=PAGE_SIZE + 1)
        .order_by("folder", "rank")
    )
    pages: dict[int, list[Conversation]] = defaultdict(list)
    for conversation in ranked:
        pages[conversation.folder_id].append(conversation)
    summaries, conversations = [], []
    for folder in folders:
        page = pages[folder.pk]
        next_cursor = cursor(page[PAGE_SIZE - 1]) if len(page) > PAGE_SIZE else None
        summaries.append({**events.folder_summary(folder), "next": next_cursor})
        conversations += page[:PAGE_SIZE]
    return summaries, conversations


def folder_page(
    user: Any, folder: Folder, before: tuple[datetime, int] | None
) -> tuple[list[Conversation], str | None]:
    """The next page of one folder's conversations, as "Show more" asks for it."""
    mine = Conversation.objects.for_user(user).filter(pinned=False, folder=folder)
    return keyset_page(mine, before)


def search_page(
    user: Any, query: str, before: tuple[datetime, int] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the member's conversations matching `query`, newest first, pinned or not, each
    with a snippet of its newest matching message (None when only the title matches)."""
    page, next_cursor = keyset_page(search.matching(user, query), before)
    snippets = search.snippets(page, query)
    results = [{**events.conversation_summary(c), "snippet": snippets.get(c.pk)} for c in page]
    return results, next_cursor


def keyset_page(
    conversations: QuerySet[Conversation], before: tuple[datetime, int] | None
) -> tuple[list[Conversation], str | None]:
    """A page of `conversations` after the cursor `before`, and the cursor of the next page."""
    conversations = conversations.order_by("-updated_at", "-pk")
    if before is not None:
        updated_at, pk = before
        conversations = conversations.filter(
            Q(updated_at__lt=updated_at) | Q(updated_at=updated_at, pk__lt=pk)
        )
    page = list(conversations[: PAGE_SIZE + 1])
    next_cursor = cursor(page[PAGE_SIZE - 1]) if len(page) > PAGE_SIZE else None
    return page[:PAGE_SIZE], next_cursor


def cursor(conversation: Conversation) -> str:
    """What the next page starts after; views.parse_cursor reads it back."""
    # UTC with "Z": a "+" in a query string would come back as a space.
    stamp = conversation.updated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp}|{conversation.pk}"
