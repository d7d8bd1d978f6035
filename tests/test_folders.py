"""Folders in the sidebar and Undo of a delete (conversations/folder_views.py, conversations/views.py)."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations import listing
from conversations.models import RESTORE_WINDOW, Conversation, Folder
from tests.test_views import UserGroupListener, detail_url, page_data, patch

pytestmark = pytest.mark.django_db


@pytest.fixture
def work(bob) -> Folder:
    return Folder.objects.create(owner=bob, name="Work")


@pytest.fixture
def charlies_folder(charlie) -> Folder:
    return Folder.objects.create(owner=charlie, name="Charlie's")


@pytest.fixture
def conversation(bob) -> Conversation:
    return Conversation.objects.create(owner=bob, title="Spring poem")


def folder_url(folder: Folder) -> str:
    return reverse("folder_detail", args=[folder.pk])


def create_folder(client: Client, body: object):
    return client.post(reverse("folder_list"), json.dumps(body), content_type="application/json")


def rename_folder(client: Client, folder: Folder, body: object):
    return client.patch(folder_url(folder), json.dumps(body), content_type="application/json")


def restore_url(conversation: Conversation) -> str:
    return reverse("conversation_restore", args=[conversation.public_id])


def first_page(client: Client) -> dict:
    return client.get(reverse("conversation_list")).json()


# --- Folders --------------------------------------------------------------------------------------


def test_it_creates_a_folder_and_tells_every_tab(client_bob, bob, django_capture_on_commit_callbacks):
    listener = UserGroupListener(bob.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = create_folder(client_bob, {"name": "  Side   projects "})

    assert response.status_code == 201
    folder = Folder.objects.get(owner=bob)
    assert folder.name == "Side projects"
    assert response.json() == {"folder": {"id": folder.pk, "name": "Side projects"}}
    event = listener.receive()
    assert event["type"] == "folder.created"
    assert event["data"] == {"id": folder.pk, "name": "Side projects"}


def test_it_lists_only_the_owners_folders_by_name(client_bob, bob, charlies_folder):
    Folder.objects.create(owner=bob, name="Work")
    Folder.objects.create(owner=bob, name="Travel")

    listed = client_bob.get(reverse("folder_list")).json()["folders"]

    assert [folder["name"] for folder in listed] == ["Travel", "Work"]
    assert [folder["name"] for folder in first_page(client_bob)["folders"]] == ["Travel", "Work"]


def test_it_renames_a_folder_and_tells_every_tab(client_bob, bob, work, django_capture_on_commit_callbacks):
    listener = UserGroupListener(bob.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = rename_folder(client_bob, work, {"name": "Office"})

    assert response.status_code == 200
    work.refresh_from_db()
    assert work.name == "Office"
    event = listener.receive()
    assert (event["type"], event["data"]) == ("folder.updated", {"id": work.pk, "name": "Office"})


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": ""}, "bad_request"),
        ({"name": "   "}, "bad_request"),
        ({"name": 5}, "bad_request"),
        ({"name": "x" * 101}, "too_large"),
        ({"name": "Work", "colour": "red"}, "bad_request"),
        (["Work"], "bad_json"),
    ],
)
def test_it_refuses_a_bad_folder_name(client_bob, work, body, code):
    created = create_folder(client_bob, body)
    renamed = rename_folder(client_bob, work, body)

    assert (created.status_code, created.json()["error"]["code"]) == (400, code)
    assert (renamed.status_code, renamed.json()["error"]["code"]) == (400, code)
    assert list(Folder.objects.values_list("name", flat=True)) == ["Work"]


def test_deleting_a_folder_keeps_its_conversations(
    client_bob, bob, work, conversation, django_capture_on_commit_callbacks
):
    conversation.folder = work
    conversation.save()
    deleted_earlier = Conversation.objects.create(
        owner=bob, title="Deleted", folder=work, deleted_at=timezone.now()
    )
    listener = UserGroupListener(bob.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = client_bob.delete(folder_url(work))

    assert response.status_code == 200
    assert not Folder.objects.exists()
    conversation.refresh_from_db()
    deleted_earlier.refresh_from_db()
    assert (conversation.folder, conversation.deleted_at) == (None, None)
    assert deleted_earlier.folder is None
    event = listener.receive()
    assert (event["type"], event["data"]["id"]) == ("folder.deleted", work.pk)
    listing = first_page(client_bob)
    assert listing["folders"] == []
    assert [(c["title"], c["folder"]) for c in listing["conversations"]] == [("Spring poem", None)]


def test_it_refuses_someone_elses_folder(client_charlie, work, conversation):
    conversation.folder = work
    conversation.save()

    assert rename_folder(client_charlie, work, {"name": "Mine now"}).status_code == 404
    assert client_charlie.delete(folder_url(work)).status_code == 404
    listing = client_charlie.get(reverse("conversation_list"), {"folder": work.pk})
    assert listing.status_code == 404
    assert listing.json()["error"]["code"] == "not_found"
    assert client_charlie.get(reverse("folder_list")).json() == {"folders": []}

    work.refresh_from_db()
    assert work.name == "Work"
    conversation.refresh_from_db()
    assert conversation.folder == work


def test_folders_need_a_login_and_the_csrf_token(bob, work):
    anonymous = Client()
    assert anonymous.get(reverse("folder_list")).status_code == 401
    assert create_folder(anonymous, {"name": "x"}).status_code == 401
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(bob)

    assert create_folder(forged, {"name": "Forged"}).status_code == 403
    assert rename_folder(forged, work, {"name": "Forged"}).status_code == 403
    assert forged.delete(folder_url(work)).status_code == 403
    assert list(Folder.objects.values_list("name", flat=True)) == ["Work"]


# --- Moving conversations -------------------------------------------------------------------------


def test_it_moves_a_conversation_into_a_folder_and_out(
    client_bob, bob, work, conversation, django_capture_on_commit_callbacks
):
    before = conversation.updated_at
    listener = UserGroupListener(bob.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = patch(client_bob, conversation, {"folder": work.pk})

    assert response.status_code == 200
    assert response.json()["conversation"]["folder"] == work.pk
    conversation.refresh_from_db()
    assert conversation.folder == work
    # Filing is not working on it: the conversation keeps its place in time.
    assert conversation.updated_at == before
    event = listener.receive()
    assert (event["type"], event["data"]["folder"]) == ("conversation.updated", work.pk)

    response = patch(client_bob, conversation, {"folder": None})

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.folder is None


@pytest.mark.parametrize("other", ["charlies", "missing", "out of range"])
def test_it_refuses_to_move_into_someone_elses_folder(client_bob, conversation, charlies_folder, other):
    folder_id = {"charlies": charlies_folder.pk, "missing": charlies_folder.pk + 1, "out of range": 2**70}[
        other
    ]

    response = patch(client_bob, conversation, {"folder": folder_id})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_folder"
    conversation.refresh_from_db()
    assert conversation.folder is None


def test_nobody_else_can_move_a_conversation(client_charlie, conversation, charlies_folder):
    assert patch(client_charlie, conversation, {"folder": charlies_folder.pk}).status_code == 404
    conversation.refresh_from_db()
    assert conversation.folder is None


@pytest.mark.parametrize("folder", ["1", True, 1.5, {"id": 1}])
def test_it_refuses_a_folder_that_is_not_an_id(client_bob, conversation, folder):
    response = patch(client_bob, conversation, {"folder": folder})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


# --- The list -------------------------------------------------------------------------------------


def test_the_first_page_groups_conversations_by_folder(client_bob, bob, charlie, work, charlies_folder):
    Conversation.objects.create(owner=bob, title="loose")
    Conversation.objects.create(owner=bob, title="filed", folder=work)
    Conversation.objects.create(owner=bob, title="pinned", folder=work, pinned=True)
    Conversation.objects.create(owner=bob, title="gone", folder=work, deleted_at=timezone.now())
    Conversation.objects.create(owner=charlie, title="theirs", folder=charlies_folder)

    listing = first_page(client_bob)

    assert listing["folders"] == [{"id": work.pk, "name": "Work", "next": None}]
    summaries = {c["title"]: c["folder"] for c in listing["conversations"]}
    assert summaries == {"pinned": work.pk, "filed": work.pk, "loose": None}
    # Pinned ones, the first page of "Recent", then each folder's first page.
    assert [c["title"] for c in listing["conversations"]] == ["pinned", "loose", "filed"]
    assert page_data(client_bob.get(reverse("chat")))["folders"] == listing["folders"]


def test_a_folder_pages_its_conversations_newest_first(client_bob, bob, work):
    start = timezone.now() - timedelta(days=1)
    for number in range(60):
        Conversation.objects.create(
            owner=bob, title=f"f{number:02d}", folder=work, updated_at=start + timedelta(minutes=number)
        )
    Conversation.objects.create(owner=bob, title="loose")

    listing = first_page(client_bob)
    cursor = listing["folders"][0]["next"]
    more = client_bob.get(reverse("conversation_list"), {"folder": work.pk, "before": cursor}).json()

    filed = [c["title"] for c in listing["conversations"] if c["folder"] == work.pk]
    assert filed == [f"f{number:02d}" for number in reversed(range(10, 60))]
    assert [c["title"] for c in more["conversations"]] == [f"f{number:02d}" for number in reversed(range(10))]
    assert more["next"] is None
    # The next page of "Recent" holds no filed conversation.
    assert listing["next"] is None


def test_the_folders_of_the_first_page_cost_two_queries_however_many(bob, work, django_assert_num_queries):
    for number in range(5):
        folder = Folder.objects.create(owner=bob, name=f"folder {number}")
        Conversation.objects.create(owner=bob, title=f"c{number}", folder=folder)

    with django_assert_num_queries(2):  # the folders, then their conversations ranked by folder
        folders, conversations = listing.folder_pages(bob)

    assert len(folders) == 6
    assert len(conversations) == 5


@pytest.mark.parametrize("folder", ["x", "-1", "0", "\u0661", str(2**70)])
def test_listing_a_folder_that_is_not_there_is_a_404(client_bob, work, folder):
    assert client_bob.get(reverse("conversation_list"), {"folder": folder}).status_code == 404


def test_search_finds_filed_conversations_as_before(client_bob, bob, work):
    Conversation.objects.create(owner=bob, title="Spring poem", folder=work)

    found = client_bob.get(reverse("conversation_list"), {"q": "spring"}).json()["conversations"]

    assert [(c["title"], c["folder"]) for c in found] == [("Spring poem", work.pk)]


# --- Undo of a delete -----------------------------------------------------------------------------


def test_the_owner_restores_a_conversation_just_deleted(
    client_bob, bob, work, conversation, django_capture_on_commit_callbacks
):
    conversation.folder = work
    conversation.save()
    before = conversation.updated_at
    client_bob.delete(detail_url(conversation))
    listener = UserGroupListener(bob.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = client_bob.post(restore_url(conversation))

    assert response.status_code == 200
    assert response.json()["conversation"]["id"] == str(conversation.public_id)
    conversation.refresh_from_db()
    assert conversation.deleted_at is None
    # Back where it was: same place in time, same folder.
    assert (conversation.updated_at, conversation.folder) == (before, work)
    event = listener.receive()
    assert (event["type"], event["conversation"]) == ("conversation.created", str(conversation.public_id))
    assert [c["title"] for c in first_page(client_bob)["conversations"]] == ["Spring poem"]


def test_a_delete_older_than_the_window_stays(client_bob, conversation):
    conversation.deleted_at = timezone.now() - RESTORE_WINDOW - timedelta(seconds=1)
    conversation.save()

    response = client_bob.post(restore_url(conversation))

    assert response.status_code == 404
    conversation.refresh_from_db()
    assert conversation.deleted_at is not None


def test_only_the_owner_restores(client_charlie, conversation):
    conversation.deleted_at = timezone.now()
    conversation.save()

    assert client_charlie.post(restore_url(conversation)).status_code == 404
    conversation.refresh_from_db()
    assert conversation.deleted_at is not None


def test_a_live_conversation_has_nothing_to_restore(
    client_bob, conversation, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = client_bob.post(restore_url(conversation))

    assert response.status_code == 404
    assert callbacks == []


def test_restore_needs_a_login_a_post_and_the_csrf_token(bob, conversation):
    conversation.deleted_at = timezone.now()
    conversation.save()
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(bob)

    assert Client().post(restore_url(conversation)).status_code == 401
    assert forged.get(restore_url(conversation)).status_code == 405
    assert forged.post(restore_url(conversation)).status_code == 403
    conversation.refresh_from_db()
    assert conversation.deleted_at is not None
