"""Images for vision models: checking and re-encoding (conversations/images.py), the upload and the
owner-only download (attachment_views.py), and a send that carries one to the offline upstream."""

import io
import random
import struct
import tracemalloc
import zlib

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from PIL import Image, PngImagePlugin

from conversations import images
from conversations.models import Attachment, Conversation, Message, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'
GPS_IFD = 0x8825
ORIENTATION = 0x0112


# --- Images made here, with Pillow ---------------------------------------------------------------


def png(size=(64, 48), mode="RGB", color=(200, 30, 30), **options) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG", **options)
    return out.getvalue()


def jpeg_with_gps(size=(300, 200)) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # taken with the phone on its side: shown turned 90 degrees
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.5), "E", (13.0, 24.0, 1.0)
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, "JPEG", exif=exif, comment=b"taken at home")
    return out.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (30, 20), index) for index in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], comment=b"frames")
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG of width x height black pixels: a few hundred KB that decode to width * height
    bytes (a decompression bomb). Written row by row, so that making it allocates little either."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def refused(data: bytes) -> str:
    with pytest.raises(images.ImageRefused) as caught:
        images.clean(data)
    assert caught.value.detail  # a sentence for the member, not only a code
    return caught.value.code


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# --- Checking and re-encoding --------------------------------------------------------------------


def test_a_png_stays_a_png_with_its_size():
    image = images.clean(png())
    assert (image.content_type, image.extension, image.width, image.height) == ("image/png", "png", 64, 48)
    assert opened(image.data).getpixel((3, 3)) == (200, 30, 30)


def test_a_png_keeps_its_transparency():
    image = images.clean(png(mode="RGBA", color=(0, 0, 255, 0)))
    assert opened(image.data).mode == "RGBA" and opened(image.data).getpixel((0, 0))[3] == 0


def test_a_jpeg_loses_its_gps_and_comment_and_is_turned_upright():
    original = jpeg_with_gps()
    assert opened(original).getexif().get_ifd(GPS_IFD)  # the test image does carry a location
    image = images.clean(original)
    cleaned = opened(image.data)
    assert image.content_type == "image/jpeg"
    assert not cleaned.getexif() and "exif" not in cleaned.info and "comment" not in cleaned.info
    assert b"Exif" not in image.data and b"taken at home" not in image.data
    assert (image.width, image.height) == (200, 300)  # orientation 6 applied, then dropped


def test_a_gif_becomes_a_png_of_its_first_frame():
    image = images.clean(animated_gif())
    assert (image.content_type, image.width, image.height) == ("image/png", 30, 20)
    assert getattr(opened(image.data), "n_frames", 1) == 1


def test_a_webp_stays_a_webp():
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(out, "WEBP")
    assert images.clean(out.getvalue()).content_type == "image/webp"


def test_a_large_image_is_downsized_to_the_longest_side(settings):
    settings.IMAGE_MAX_SIDE = 256
    image = images.clean(png(size=(1024, 512)))
    assert (image.width, image.height) == (256, 128)


def test_a_png_too_big_after_re_encoding_is_stored_as_jpeg(settings):
    settings.IMAGE_PNG_MAX_BYTES = 1000
    noise = Image.frombytes("RGB", (100, 100), random.Random(6).randbytes(100 * 100 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG")
    assert images.clean(out.getvalue()).content_type == "image/jpeg"


def test_an_svg_is_refused():
    assert refused(SVG) == "image_type_not_allowed"


def test_other_formats_pillow_knows_are_refused():
    out = io.BytesIO()
    Image.new("RGB", (10, 10)).save(out, "BMP")
    assert refused(out.getvalue()) == "image_type_not_allowed"
    assert refused(b"") == "image_type_not_allowed"


def test_a_png_with_a_zip_after_its_end_is_refused():
    assert refused(png() + b"PK\x03\x04" + b"\0" * 26 + b"payload.txt") == "image_polyglot"


def test_a_png_with_a_page_after_its_end_is_refused():
    assert refused(png() + b"<html><script>alert(1)</script></html>") == "image_polyglot"


def test_a_png_with_a_page_in_its_text_chunk_is_refused():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<!DOCTYPE html><script>alert(1)</script>")
    assert refused(png(pnginfo=info)) == "image_polyglot"


def test_a_jpeg_with_data_after_its_end_is_refused():
    assert refused(jpeg_with_gps() + b"PK\x05\x06" + b"\0" * 18) == "image_polyglot"


def test_a_gif_with_data_after_its_trailer_is_refused():
    assert refused(animated_gif() + b"<script>alert(1)</script>") == "image_polyglot"


def test_padding_after_the_end_is_not_a_polyglot():
    assert images.clean(png() + b"\0\0\0\n").content_type == "image/png"


def test_a_truncated_png_is_refused():
    data = png(size=(300, 300), color=(1, 2, 3))
    assert refused(data[:-20]) == "image_truncated"
    assert refused(data[:60]) == "image_truncated"


def test_a_png_whose_pixel_data_stops_early_is_refused():
    """Every chunk whole, but the compressed pixels stop after 50 of 200 rows: only decoding can tell."""
    full = png_claiming(200, 200)
    header_end = 8 + 25
    compressor = zlib.compressobj()
    pixels = compressor.compress(b"\0" * 201 * 50) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    short = full[:header_end] + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    assert refused(short) == "image_truncated"


def test_a_truncated_jpeg_is_refused():
    data = jpeg_with_gps()
    assert refused(data[: len(data) // 2]) == "image_truncated"


def test_a_20000_by_20000_png_is_refused_before_decoding():
    bomb = png_claiming(20000, 20000)
    assert len(bomb) < 1_000_000  # 400 million pixels in a small file
    tracemalloc.start()
    try:
        assert refused(bomb) == "image_too_many_pixels"
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024  # decoding would take 400 MB


def test_an_image_over_the_pixel_cap_is_refused(settings):
    settings.IMAGE_MAX_PIXELS = 1000
    assert refused(png(size=(50, 50))) == "image_too_many_pixels"


def test_an_oversized_file_is_refused_before_opening(settings):
    settings.IMAGE_MAX_BYTES = 100
    assert refused(png(size=(300, 300), color=(5, 6, 7)) + b"") == "image_too_large"


# --- Upload and download -------------------------------------------------------------------------


def test_a_jpeg_of_a_hundred_passes_and_more_is_refused_before_decoding():
    """libjpeg decodes every scan over the whole picture: a thousand tiny scans cost minutes."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(out, "JPEG")
    data = out.getvalue()
    start, end = data.index(b"\xff\xda"), data.rindex(b"\xff\xd9")
    many_scans = data[:start] + data[start:end] * (images.MAX_JPEG_SCANS + 1) + data[end:]
    assert refused(many_scans) == "image_too_complex"
    progressive = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(progressive, "JPEG", progressive=True)
    assert opened(progressive.getvalue()).size == (64, 64)  # a real progressive JPEG's few passes


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def upload(client: Client, data: bytes, name: str = "photo.png"):
    file = io.BytesIO(data)
    file.name = name
    return client.post("/api/attachments/", {"file": file})


@pytest.mark.django_db
def test_an_upload_is_stored_under_a_generated_name(client_bob, bob, media_root):
    response = upload(client_bob, png(), name="../../etc/evil.svg")
    assert response.status_code == 201
    body = response.json()
    assert (body["width"], body["height"]) == (64, 48)
    assert body["url"] == f"/attachments/{body['id']}/"
    attachment = Attachment.objects.get(public_id=body["id"])
    assert attachment.owner == bob and attachment.conversation is None
    assert attachment.content_type == "image/png" and attachment.file.name.endswith(".png")
    assert "evil" not in attachment.file.name
    assert (media_root / attachment.file.name).is_file()


@pytest.mark.django_db
def test_an_svg_upload_is_refused_with_a_named_error(client_bob):
    response = upload(client_bob, SVG, name="drawing.svg")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "image_type_not_allowed"
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_an_upload_over_the_limit_is_refused_unread(client_bob, settings):
    settings.IMAGE_MAX_BYTES = 1024
    response = upload(client_bob, png(size=(400, 400), color=(9, 9, 9)) + b"\0" * 40_000)
    assert response.status_code == 413 and response.json()["error"]["code"] == "image_too_large"


@pytest.mark.django_db
def test_an_upload_needs_a_login_and_the_csrf_token(bob):
    assert upload(Client(), png()).status_code == 401
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(bob)
    assert upload(forged, png()).status_code == 403
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_the_owner_reads_the_image_with_safe_headers(client_bob):
    body = upload(client_bob, png()).json()
    response = client_bob.get(body["url"])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert "default-src 'none'" in response["Content-Security-Policy"]
    assert opened(b"".join(response.streaming_content)).size == (64, 48)


@pytest.mark.django_db
def test_nobody_else_reads_the_image(client_bob, client_charlie):
    url = upload(client_bob, png()).json()["url"]
    assert client_charlie.get(url).status_code == 404
    assert Client().get(url).status_code == 404
    assert client_bob.get("/attachments/00000000-0000-0000-0000-000000000000/").status_code == 404


# --- Sending an image ----------------------------------------------------------------------------


def stored_png(owner, **options) -> Attachment:
    return images.save_upload(owner, png(**options))


async def open_socket(user) -> Socket:
    socket = Socket(await database_sync_to_async(session_cookie)(user))
    assert await socket.open()
    return socket


@pytest.mark.django_db(transaction=True)
async def test_an_image_reaches_a_vision_model_and_is_described(bob, vision_model, offline_upstream):
    attachment = await database_sync_to_async(stored_png)(bob)
    conversation = await database_sync_to_async(Conversation.objects.create)(owner=bob, model=vision_model)
    socket = await open_socket(bob)
    await socket.send(
        type="send",
        conversation=str(conversation.public_id),
        text="What is in this picture?",
        attachments=[str(attachment.public_id)],
    )
    prompt = await socket.until("message.created")
    done = await socket.until("reply.done")
    await socket.close()

    assert prompt["data"]["parts"] == [
        {"type": "image", "attachment": str(attachment.public_id), "width": 64, "height": 48},
        {"type": "text", "text": "What is in this picture?"},
    ]
    assert done["data"]["status"] == "complete"
    assert f"image/png, {attachment.size} bytes, 64 x 48 pixels" in socket.texts[done["message"]]
    record = await database_sync_to_async(UsageRecord.objects.get)(message_id=done["message"])
    sent = offline_upstream.request(str(record.request_id))["body"]["messages"][-1]
    assert sent["role"] == "user"
    assert sent["content"][0]["type"] == "image_url"
    assert sent["content"][0]["image_url"]["url"] == await database_sync_to_async(images.data_url)(attachment)
    assert sent["content"][1] == {"type": "text", "text": "What is in this picture?"}
    await database_sync_to_async(attachment.refresh_from_db)()
    assert attachment.conversation_id == conversation.pk


@pytest.mark.django_db(transaction=True)
async def test_an_image_alone_starts_a_conversation(bob, vision_model, offline_upstream):
    attachment = await database_sync_to_async(stored_png)(bob)
    socket = await open_socket(bob)
    await socket.send(
        type="send", conversation=None, model=vision_model.pk, attachments=[str(attachment.public_id)]
    )
    done = await socket.until("reply.done")
    await socket.close()
    assert "64 x 48 pixels" in socket.texts[done["message"]]


@pytest.mark.django_db(transaction=True)
async def test_a_model_without_vision_refuses_before_any_upstream_call(bob, offline_model, offline_upstream):
    attachment = await database_sync_to_async(stored_png)(bob)
    conversation = await database_sync_to_async(Conversation.objects.create)(owner=bob, model=offline_model)
    before = len(offline_upstream.requests())
    socket = await open_socket(bob)
    await socket.send(
        type="send",
        conversation=str(conversation.public_id),
        text="Describe it",
        attachments=[str(attachment.public_id)],
        ref="c1",
    )
    error = await socket.until("error")
    await socket.close()
    assert (error["code"], error["ref"]) == ("vision_not_supported", "c1")
    assert len(offline_upstream.requests()) == before
    assert not await database_sync_to_async(Message.objects.exists)()
    assert not await database_sync_to_async(UsageRecord.objects.exists)()
    await database_sync_to_async(attachment.refresh_from_db)()
    assert attachment.conversation_id is None


@pytest.mark.django_db(transaction=True)
async def test_someone_elses_image_cannot_be_sent(bob, charlie, vision_model):
    theirs = await database_sync_to_async(stored_png)(charlie)
    conversation = await database_sync_to_async(Conversation.objects.create)(owner=bob, model=vision_model)
    socket = await open_socket(bob)
    await socket.send(
        type="send", conversation=str(conversation.public_id), text="Hi", attachments=[str(theirs.public_id)]
    )
    error = await socket.until("error")
    await socket.close()
    assert error["code"] == "attachment_not_found"
    assert not await database_sync_to_async(Message.objects.exists)()


@pytest.mark.django_db(transaction=True)
async def test_an_image_of_another_conversation_cannot_be_sent(bob, vision_model):
    attachment = await database_sync_to_async(stored_png)(bob)
    first, second = [
        await database_sync_to_async(Conversation.objects.create)(owner=bob, model=vision_model) for _ in "ab"
    ]
    await database_sync_to_async(Attachment.objects.filter(pk=attachment.pk).update)(conversation=first)
    socket = await open_socket(bob)
    await socket.send(
        type="send", conversation=str(second.public_id), text="Hi", attachments=[str(attachment.public_id)]
    )
    error = await socket.until("error")
    await socket.close()
    assert error["code"] == "attachment_not_found"


@pytest.mark.django_db(transaction=True)
async def test_malformed_attachments_are_refused(bob, vision_model):
    conversation = await database_sync_to_async(Conversation.objects.create)(owner=bob, model=vision_model)
    socket = await open_socket(bob)
    codes = []
    for attachments in ("not-a-list", [1, 2], ["not-a-uuid"], [str(i) * 36 for i in range(9)]):
        await socket.send(
            type="send", conversation=str(conversation.public_id), text="Hi", attachments=attachments
        )
        codes.append((await socket.until("error"))["code"])
    await socket.close()
    assert codes == ["bad_request", "bad_request", "attachment_not_found", "too_many_images"]


@pytest.mark.django_db(transaction=True)
async def test_regenerate_sends_the_image_again_and_a_model_without_vision_gets_a_note(
    bob, vision_model, offline_model, offline_upstream
):
    attachment = await database_sync_to_async(stored_png)(bob)
    conversation = await database_sync_to_async(Conversation.objects.create)(owner=bob, model=vision_model)
    socket = await open_socket(bob)
    public_id = str(conversation.public_id)
    await socket.send(
        type="send", conversation=public_id, text="Look", attachments=[str(attachment.public_id)]
    )
    first = await socket.until("reply.done")
    await socket.send(type="regenerate", conversation=public_id, message=first["message"])
    second = await socket.until("reply.done")
    # The member picks a model without vision afterwards: the image is not sent, a note says so.
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(model=offline_model)
    await socket.send(type="regenerate", conversation=public_id, message=first["message"])
    third = await socket.until("reply.done")
    await socket.close()

    def sent(done):
        record = UsageRecord.objects.get(message_id=done["message"])
        return offline_upstream.request(str(record.request_id))["body"]["messages"][-1]["content"]

    assert "64 x 48 pixels" in socket.texts[second["message"]]
    assert (await database_sync_to_async(sent)(second))[0]["type"] == "image_url"
    assert third["data"]["status"] == "complete"
    assert (
        await database_sync_to_async(sent)(third)
        == "[An image was attached here; it is not available to this model.]\n\nLook"
    )


@pytest.mark.django_db
def test_unsent_uploads_are_capped_and_go_after_a_day(client_bob, bob, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.IMAGES_PENDING_PER_MEMBER = 2
    first = Attachment.objects.get(public_id=upload(client_bob, png()).json()["id"])
    assert upload(client_bob, png()).status_code == 201
    response = upload(client_bob, png())
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_pending_images"
    Attachment.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=2))
    assert upload(client_bob, png()).status_code == 201  # the day-old one went, file and all
    assert not Attachment.objects.filter(pk=first.pk).exists()
