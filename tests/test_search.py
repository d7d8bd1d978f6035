"""The sidebar search: `q` on the conversation list (conversations/views.py, conversations/search.py)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from conversations import listing, search
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")


def conversation_with(owner, title: str, *texts: str, **fields: object) -> Conversation:
    """A conversation whose messages say `texts`, user and assistant in turn."""
    conversation = Conversation.objects.create(owner=owner, title=title, **fields)
    parent = None
    for number, text in enumerate(texts):
        role = Message.Role.USER if number % 2 == 0 else Message.Role.ASSISTANT
        parent = Message(conversation=conversation, parent=parent, role=role)
        parent.set_parts([{"type": "text", "text": text}])
        parent.save()
    return conversation


def found(client, query: str, **params: str) -> dict:
    response = client.get(reverse("conversation_list"), {"q": query, **params})
    assert response.status_code == 200, response.content
    return response.json()


def titles(listing: dict) -> list[str]:
    return [conversation["title"] for conversation in listing["conversations"]]


def test_it_finds_an_english_word_in_any_case(client_bob, bob):
    conversation_with(bob, "Trip", "What is the Weather like today?", "Sunny.")
    conversation_with(bob, "Cooking", "How long do eggs boil?")

    assert titles(found(client_bob, "weather")) == ["Trip"]
    assert titles(found(client_bob, "WEATHER")) == ["Trip"]


def test_it_finds_a_chinese_word_inside_a_sentence(client_bob, bob):
    conversation_with(bob, "天气", "今天北京的天气怎么样", "北京今天晴。")
    conversation_with(bob, "上海", "上海明天会下雨吗")

    listing = found(client_bob, "北京")

    assert titles(listing) == ["天气"]
    assert listing["conversations"][0]["snippet"] == "北京今天晴。"


def test_it_finds_a_title(client_bob, bob):
    conversation_with(bob, "Spring poem", "Write something about flowers.")
    conversation_with(bob, "Tax return", "Which forms do I need?")

    listing = found(client_bob, "POEM")

    assert titles(listing) == ["Spring poem"]
    # Only the title matches: there is no message to quote.
    assert listing["conversations"][0]["snippet"] is None


def test_it_finds_the_text_of_any_message_and_quotes_it(client_bob, bob):
    conversation_with(bob, "Maths", "What is 2 + 2?", "It is 4, as every abacus will tell you.")
    conversation_with(bob, "Other", "Hello")

    listing = found(client_bob, "abacus")

    assert titles(listing) == ["Maths"]
    result = listing["conversations"][0]
    assert result["id"] == str(Conversation.objects.get(title="Maths").public_id)
    assert result["snippet"] == "It is 4, as every abacus will tell you."


def test_it_never_finds_another_members_conversations(client_bob, client_charlie, bob, charlie):
    conversation_with(bob, "Bob's secret plan", "The treasure is under the oak.")
    conversation_with(charlie, "Charlie's treasure map", "Treasure: north of the oak.")

    assert titles(found(client_bob, "treasure")) == ["Bob's secret plan"]
    assert titles(found(client_charlie, "treasure")) == ["Charlie's treasure map"]
    assert titles(found(client_charlie, "secret plan")) == []


def test_it_never_finds_a_deleted_conversation(client_bob, bob):
    conversation_with(bob, "Kept", "lighthouse keeper")
    conversation_with(bob, "Deleted lighthouse", "lighthouse", deleted_at=timezone.now())

    assert titles(found(client_bob, "lighthouse")) == ["Kept"]


def test_it_refuses_a_query_that_is_too_long(client_bob, bob):
    conversation_with(bob, "x" * 10)

    response = client_bob.get(reverse("conversation_list"), {"q": "x" * (search.MAX_QUERY_CHARS + 1)})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_large"
    assert titles(found(client_bob, "x" * search.MAX_QUERY_CHARS)) == []


def test_it_requires_login(client):
    response = client.get(reverse("conversation_list"), {"q": "anything"})

    assert response.status_code == 401


def test_a_blank_query_lists_as_usual(client_bob, bob):
    conversation_with(bob, "pinned", pinned=True, updated_at=timezone.now() - timedelta(days=30))
    conversation_with(bob, "recent")

    listing = found(client_bob, "   ")

    assert titles(listing) == ["pinned", "recent"]
    assert "snippet" not in listing["conversations"][0]


def test_it_matches_percent_and_underscore_literally(client_bob, bob):
    conversation_with(bob, "Discount", "It is 100% off")
    conversation_with(bob, "Other", "It is 1000 off, snake_case")

    assert titles(found(client_bob, "100%")) == ["Discount"]
    assert titles(found(client_bob, "e_c")) == ["Other"]


def test_it_ignores_a_nul_character(client_bob, bob):
    conversation_with(bob, "Weather", "rain")

    assert titles(found(client_bob, "ra\x00in")) == ["Weather"]


def test_it_pages_results_newest_first_pinned_or_not(client_bob, bob, monkeypatch):
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    start = timezone.now() - timedelta(days=1)
    for number in range(5):
        conversation_with(
            bob,
            f"c{number}",
            f"note {number}",
            pinned=number == 1,
            updated_at=start + timedelta(minutes=number),
        )
    conversation_with(bob, "unrelated", "nothing here", updated_at=start + timedelta(hours=1))

    pages = [found(client_bob, "note")]
    while pages[-1]["next"]:
        pages.append(found(client_bob, "note", before=pages[-1]["next"]))

    assert [titles(page) for page in pages] == [["c4", "c3"], ["c2", "c1"], ["c0"]]


def test_each_page_of_results_takes_two_queries(bob, django_assert_num_queries):
    for number in range(3):
        conversation_with(bob, f"c{number}", *[f"needle {turn}" for turn in range(20)])

    # The page of matching conversations, then the newest matching message of each.
    with django_assert_num_queries(2):
        results, _next = listing.search_page(bob, "needle")

    assert [result["snippet"] for result in results] == ["needle 19"] * 3


def test_it_quotes_the_match_of_a_long_message(client_bob, bob):
    conversation_with(bob, "Long", "filler " * 20_000 + "the needle is here " + "filler " * 20_000)

    snippet = found(client_bob, "NEEDLE")["conversations"][0]["snippet"]

    assert "the needle is here" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= search.SNIPPET_CHARS + 2


def test_a_snippet_is_short_and_shows_the_match():
    text = "intro " * 50 + "the\n\nKEYWORD sits here " + "outro " * 50

    snippet = search.excerpt(text, "keyword")

    assert "the KEYWORD sits here" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= search.SNIPPET_CHARS + 2


@on_postgresql
def test_postgresql_has_trigram_indexes_that_icontains_can_use(bob):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)",
            [["conversation_title_trgm", "message_text_trgm"]],
        )
        indexes = dict(cursor.fetchall())
        # Small test tables would be scanned; the question is whether the index can serve the query.
        cursor.execute("SET LOCAL enable_seqscan = off")

    assert sorted(indexes) == ["conversation_title_trgm", "message_text_trgm"]
    assert all("gin_trgm_ops" in definition and "upper" in definition for definition in indexes.values())
    assert "message_text_trgm" in Message.objects.filter(text__icontains="weather").explain()
    assert "message_text_trgm" in Message.objects.filter(text__icontains="北京的天").explain()
    assert "conversation_title_trgm" in Conversation.objects.filter(title__icontains="poem").explain()
