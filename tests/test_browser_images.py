"""Images for a vision model in a real browser: attach, paste, drop, remove, send, see it described."""

import io

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from conversations.models import ChatModel, Profile
from tests.fixtures.browser import shot
from tests.fixtures.chat_page import Chat

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'


@pytest.fixture
def live_server_env(tmp_path) -> dict[str, str]:
    return {"MEDIA_ROOT": str(tmp_path / "media")}


@pytest.fixture
def vision_model(vision_model, bob) -> ChatModel:
    """The vision model (tests/fixtures/chat.py), bob's default: his new chats can take images."""
    Profile.objects.filter(user=bob).update(default_model=vision_model)
    return vision_model


def picture(size=(320, 200)) -> bytes:
    image = Image.new("RGB", size, (250, 235, 200))
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.ellipse((width * 0.3, height * 0.2, width * 0.7, height * 0.8), fill=(230, 90, 40))
    draw.rectangle((0, height * 0.85, width, height), fill=(60, 120, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def attach(chat: Chat, name: str, mime: str, data: bytes) -> None:
    with chat.page.expect_file_chooser() as chooser:
        chat.page.get_by_role("button", name="Attach images").click()
    chooser.value.set_files({"name": name, "mimeType": mime, "buffer": data})


def test_an_attached_png_is_sent_shown_and_described(open_chat, vision_model):
    chat = open_chat()
    attach(chat, "sunset.png", "image/png", picture())
    thumbnail = chat.page.locator("#attachment-tray .attachment")
    expect(thumbnail).to_have_count(1)
    expect(thumbnail).not_to_have_class("attachment uploading")
    chat.composer.fill("What is in this picture?")
    shot(chat.page, "1-attached")
    chat.composer.press("Enter")

    image = chat.page.locator(".message-user .message-image img")
    expect(image).to_have_count(1)
    # Loaded from this site under the page's CSP, for its owner: the browser decoded it.
    chat.page.wait_for_function(
        "() => document.querySelector('.message-user .message-image img')?.naturalWidth === 320"
    )
    expect(chat.page.locator("#attachment-tray")).to_be_hidden()
    expect(chat.last_reply.locator(".markdown")).to_contain_text("Image 1: image/png")
    expect(chat.last_reply.locator(".markdown")).to_contain_text("320 x 200 pixels")
    shot(chat.page, "2-described")

    # After a reload the image comes from the snapshot, still from this site.
    chat.page.reload()
    chat.wait_until_connected()
    chat.page.wait_for_function(
        "() => document.querySelector('.message-user .message-image img')?.naturalWidth === 320"
    )
    assert not chat.dialogs


def test_an_svg_is_refused_by_name_and_pasted_and_dropped_images_can_be_removed(open_chat, vision_model):
    chat = open_chat()
    attach(chat, "drawing.svg", "image/svg+xml", SVG)
    error = chat.page.locator("#composer-error")
    expect(error).to_have_text("Only PNG, JPEG, WebP and GIF images can be attached.")
    expect(chat.page.locator("#attachment-tray")).to_be_hidden()
    shot(chat.page, "1-svg-refused")

    png = list(picture((40, 30)))
    chat.page.evaluate(
        """bytes => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "pasted.png", {type: "image/png"}));
            document.querySelector('#composer-input').dispatchEvent(
                new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
            const dropped = new DataTransfer();
            dropped.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
            const composer = document.querySelector('#composer');
            for (const type of ["dragenter", "dragover", "drop"]) {
                composer.dispatchEvent(new DragEvent(type, {dataTransfer: dropped, bubbles: true, cancelable: true}));
            }
        }""",
        png,
    )
    ready = chat.page.locator("#attachment-tray .attachment:not(.uploading)")
    expect(ready).to_have_count(2)
    shot(chat.page, "2-pasted-and-dropped")
    chat.page.get_by_role("button", name="Remove image").first.click()
    expect(ready).to_have_count(1)
    # An image alone is a message.
    expect(chat.page.get_by_role("button", name="Send")).to_be_enabled()
