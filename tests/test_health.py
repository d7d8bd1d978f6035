"""GET /health/: every dependency checked, 503 when one fails, nothing private in the answer."""

import socket

import pytest

from conversations import registry
from conversations.models import Provider


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.django_db
def test_it_is_ok_when_everything_answers(client, settings, offline_upstream):
    settings.OPENAI_BASE_URL = ""
    settings.OFFLINE_UPSTREAM_URL = offline_upstream.base_url
    registry.register_environment_providers()

    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok", "channel_layer": "ok", "upstream": "ok"},
    }
    assert "no-cache" in response["Cache-Control"]
    assert not response.cookies


@pytest.mark.django_db
def test_it_is_degraded_when_the_upstream_is_unreachable(client, settings):
    settings.OPENAI_BASE_URL = closed_port_url()
    settings.OPENAI_API_KEY = "sk-health-SECRET5678"
    registry.register_environment_providers()

    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["upstream"] != "ok"
    assert body["checks"]["database"] == body["checks"]["cache"] == body["checks"]["channel_layer"] == "ok"
    assert "SECRET" not in response.content.decode()
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db
def test_it_is_degraded_without_a_provider(client, settings):
    settings.OPENAI_BASE_URL = ""
    Provider.objects.create(name="Off", base_url=closed_port_url(), is_offline=True, enabled=False)

    response = client.get("/health/")

    assert response.status_code == 503
    assert response.json()["checks"]["upstream"] == "no_provider"


@pytest.mark.django_db
def test_it_answers_only_get(client):
    assert client.post("/health/").status_code == 405
