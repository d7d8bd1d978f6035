"""Images a member attaches for vision models: opened safely, checked, written anew, stored.

Only PNG, JPEG, WebP and GIF are opened, and Pillow is told so (`formats=`), so none of its other
decoders ever reads member data (SVG it cannot open at all). Before a pixel is decoded: the byte
size, the pixel count from the header (a decompression bomb is a small file that claims a huge
image), and the container's structure: the file must end where the image ends (nothing after PNG's
IEND, JPEG's EOI, GIF's trailer or WebP's RIFF size: a ZIP or HTML appended there makes a polyglot),
and its metadata must hold no markup. Then the image is decoded whole (a truncated one is refused,
never padded out), turned upright, converted to sRGB, downsized to IMAGE_MAX_SIDE and encoded again
from its pixels alone: no EXIF (GPS), XMP, comments or colour profile survive.

What is stored: PNG stays PNG (screenshots stay sharp) unless it comes out larger than
IMAGE_PNG_MAX_BYTES, then it becomes JPEG (photos pasted from a clipboard arrive as PNG), its
transparency flattened onto white; JPEG stays JPEG; WebP stays WebP; a GIF becomes a PNG of its first
frame.
"""

import base64
import io
import logging
import re
import struct
import uuid
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone
from django.utils.translation import gettext as _
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from conversations.models import Attachment, Conversation, Message

logger = logging.getLogger(__name__)

# What Pillow may try, in this order. A JPEG with several pictures (MPF) opens as "MPO".
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
OPENED_AS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP", "GIF": "GIF"}
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
QUALITY = 85
MAX_JPEG_SCANS = 100
UNSENT_KEPT = timedelta(days=1)
# A sniffing browser or an archive tool would take these for a page or a ZIP inside an image.
MARKUP = re.compile(
    rb"<\s*(?:script|html|body|iframe|svg|object|embed|!doctype|\?php)|PK\x03\x04|PK\x05\x06", re.IGNORECASE
)
# Bytes some encoders leave after the end of the image; nothing a browser or an archive tool reads.
PADDING = b"\x00\r\n"
# EXIF orientation -> the transpose that makes the picture upright (as PIL.ImageOps.exif_transpose).
ORIENTATION_TAG = 0x0112
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What a damaged file makes Pillow's decoders raise.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ImageRefused(Exception):
    """The upload is not an image chatsite accepts; code and detail go back to the member."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, status


def type_not_allowed() -> ImageRefused:
    return ImageRefused("image_type_not_allowed", _("Only PNG, JPEG, WebP and GIF images can be attached."))


def too_large() -> ImageRefused:
    limit = settings.IMAGE_MAX_BYTES / (1024 * 1024)
    return ImageRefused(
        "image_too_large",
        _("The image is larger than %(limit)g MB.") % {"limit": round(limit, 1)},
        status=413,
    )


def too_many_pixels() -> ImageRefused:
    limit = settings.IMAGE_MAX_PIXELS / 1_000_000
    return ImageRefused(
        "image_too_many_pixels",
        _("The image has more than %(limit)g million pixels.") % {"limit": round(limit, 1)},
    )


def truncated() -> ImageRefused:
    return ImageRefused("image_truncated", _("The image file is incomplete."))


def too_complex() -> ImageRefused:
    return ImageRefused(
        "image_too_complex", _("The image is encoded in too many passes to be read. Save it again and retry.")
    )


def unreadable() -> ImageRefused:
    return ImageRefused("image_unreadable", _("The image could not be read."))


def polyglot() -> ImageRefused:
    return ImageRefused(
        "image_polyglot", _("The file holds more than an image (data after its end, or markup inside it).")
    )


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


def clean(data: bytes) -> CleanImage:
    """Check an uploaded file and return the image written anew; ImageRefused when it is not one."""
    if len(data) > settings.IMAGE_MAX_BYTES:
        raise too_large()
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError as error:
        raise too_many_pixels() from error
    except UnidentifiedImageError as error:
        raise type_not_allowed() from error
    except DECODE_ERRORS as error:
        raise unreadable() from error
    with image:
        kind = OPENED_AS.get(image.format or "")
        if kind is None:
            raise type_not_allowed()
        width, height = image.size
        if width < 1 or height < 1:
            raise unreadable()
        if width * height > settings.IMAGE_MAX_PIXELS:
            raise too_many_pixels()
        metadata = LAYOUTS[kind](data)
        if MARKUP.search(b"".join(metadata)):
            raise polyglot()
        pixels = _decode(image, kind)
    return _encode(pixels, kind)


def save_upload(owner: Any, data: bytes) -> Attachment:
    """Clean an upload and store it under a generated name, not yet part of a conversation.

    Images uploaded but never sent (removed from the composer, a closed tab) go after a day, when
    their owner next uploads; until then a member may hold IMAGES_PENDING_PER_MEMBER of them, so that
    uploads cannot fill the disk."""
    unsent = Attachment.objects.filter(owner=owner, conversation__isnull=True)
    unsent.filter(created_at__lt=timezone.now() - UNSENT_KEPT).delete()  # the files go with them (signals)
    if unsent.count() >= settings.IMAGES_PENDING_PER_MEMBER:
        raise ImageRefused(
            "too_many_pending_images",
            _("%(count)s images are waiting to be sent. Send them, or try again tomorrow.")
            % {"count": settings.IMAGES_PENDING_PER_MEMBER},
        )
    image = clean(data)
    return Attachment.objects.create(
        owner=owner,
        file=ContentFile(image.data, name=f"image.{image.extension}"),
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        size=len(image.data),
    )


def data_urls(conversation: Conversation, messages: list[Message]) -> dict[str, str]:
    """The images the user messages' parts name, as data: URLs by attachment id; an image whose file
    is gone is left out (context.py sends a note in its place). No query without images."""
    wanted = set()
    for message in messages:
        if message.role == Message.Role.USER:
            wanted.update(_uuid(p.get("attachment")) for p in message.parts if p.get("type") == "image")
    wanted.discard(None)
    if not wanted:
        return {}
    urls = {}
    for attachment in Attachment.objects.filter(conversation=conversation, public_id__in=wanted):
        try:
            urls[str(attachment.public_id)] = data_url(attachment)
        except OSError:
            logger.warning("the file of attachment %s cannot be read", attachment.pk)
    return urls


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def data_url(attachment: Attachment) -> str:
    """The stored image as a data: URL, as vision models take it (image_url parts)."""
    with attachment.file.open("rb") as file:
        encoded = base64.b64encode(file.read()).decode("ascii")
    return f"data:{attachment.content_type};base64,{encoded}"


# --- Decoding and encoding -----------------------------------------------------------------------


def _decode(image: ImageFile.ImageFile, kind: str) -> Image.Image:
    """The first frame, decoded whole, upright, in sRGB, RGB or RGBA, at most IMAGE_MAX_SIDE wide and
    high, and without any of the file's metadata."""
    side = settings.IMAGE_MAX_SIDE
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except DECODE_ERRORS:
        orientation = 1  # a broken EXIF block is dropped with the rest
    icc = image.info.get("icc_profile")
    has_alpha = image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info
    try:
        if kind == "JPEG":
            image.draft("RGB", (side, side))  # JPEG decodes at 1/2, 1/4, 1/8 size for less memory
        image.load()
        pixels = image.convert("RGBA" if has_alpha else "RGB")
    except DECODE_ERRORS as error:
        if "truncated" in str(error) or isinstance(error, EOFError):
            raise truncated() from error
        raise unreadable() from error
    if icc:
        pixels = _to_srgb(pixels, icc)
    pixels.thumbnail((side, side), Image.Resampling.LANCZOS)
    if orientation in UPRIGHT:
        pixels = pixels.transpose(UPRIGHT[orientation])
    pixels.info = {}  # encoders fall back on info for profiles, comments and transparency
    return pixels


def _to_srgb(pixels: Image.Image, icc: bytes) -> Image.Image:
    """Colours as the profile meant them, so that dropping the profile changes nothing visible."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(
            pixels, source, ImageCms.createProfile("sRGB"), outputMode=pixels.mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return pixels  # an unusable profile: the pixels as they are


def _encode(pixels: Image.Image, kind: str) -> CleanImage:
    target = "PNG" if kind in {"PNG", "GIF"} else kind
    data = _save(pixels, target)
    if target == "PNG" and len(data) > settings.IMAGE_PNG_MAX_BYTES:
        target = "JPEG"
        data = _save(pixels, target)
    return CleanImage(data, CONTENT_TYPES[target], EXTENSIONS[target], pixels.width, pixels.height)


def _save(pixels: Image.Image, target: str) -> bytes:
    out = io.BytesIO()
    if target == "PNG":
        pixels.save(out, "PNG")
    elif target == "JPEG":
        if pixels.mode == "RGBA":
            flat = Image.new("RGB", pixels.size, (255, 255, 255))
            flat.paste(pixels, mask=pixels.getchannel("A"))
            pixels = flat
        pixels.save(out, "JPEG", quality=QUALITY, optimize=True)
    else:
        pixels.save(out, "WEBP", quality=QUALITY)
    return out.getvalue()


# --- Container layouts: where the image ends, and its metadata -----------------------------------
# Each returns the metadata blocks of a file and refuses one that runs short (image_truncated) or
# goes on after the image's end (image_polyglot). Pixel data is skipped, never copied.


def _after_end(data: bytes, end: int) -> None:
    if data[end:].strip(PADDING):
        raise polyglot()


def _png_layout(data: bytes) -> list[bytes]:
    metadata = []
    offset = 8
    while True:
        if offset + 12 > len(data):
            raise truncated()
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise truncated()
        if kind not in {b"IDAT", b"fdAT"}:
            metadata.append(data[offset + 8 : end - 4])
        offset = end
        if kind == b"IEND":
            _after_end(data, offset)
            return metadata


def _jpeg_layout(data: bytes) -> list[bytes]:
    metadata: list[bytes] = []
    offset = 0
    # Several pictures in one file (MPF, as phones write them) follow each other, each SOI to EOI.
    while offset == 0 or data.startswith(b"\xff\xd8", offset):
        offset = _jpeg_picture(data, offset + 2, metadata)
    _after_end(data, offset)
    return metadata


def _jpeg_picture(data: bytes, offset: int, metadata: list[bytes]) -> int:
    """Walk one picture's segments from after its SOI; return the offset after its EOI."""
    scans = 0
    while True:
        if offset + 2 > len(data):
            raise truncated()
        if data[offset] != 0xFF:
            raise unreadable()
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0xD9:  # EOI
            return offset + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        if offset + 4 > len(data):
            raise truncated()
        end = offset + 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
        if end > len(data):
            raise truncated()
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:  # APPn (EXIF, XMP, ICC) and comments
            metadata.append(data[offset + 4 : end])
        if marker == 0xDA:
            # libjpeg decodes every scan over the whole picture: a file of a thousand tiny scans costs
            # minutes of CPU. Progressive JPEGs from cameras and encoders have about ten.
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise too_complex()
            offset = _jpeg_scan_end(data, end)
        else:
            offset = end


def _jpeg_scan_end(data: bytes, offset: int) -> int:
    """After a start-of-scan header: the offset of the first marker past the entropy-coded data."""
    while True:
        offset = data.find(b"\xff", offset)
        if offset < 0 or offset + 1 >= len(data):
            raise truncated()
        following = data[offset + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            offset += 1  # a stuffed 0xFF, a restart marker, or fill before a marker
            continue
        return offset


def _gif_layout(data: bytes) -> list[bytes]:
    metadata = []
    if len(data) < 13:
        raise truncated()
    flags = data[10]
    offset = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        if offset >= len(data):
            raise truncated()
        block = data[offset]
        if block == 0x3B:  # trailer
            _after_end(data, offset + 1)
            return metadata
        if block == 0x21:  # extension: comments, application data, plain text are metadata
            label = data[offset + 1] if offset + 1 < len(data) else None
            offset, blocks = _gif_sub_blocks(data, offset + 2, keep=label in {0x01, 0xFE, 0xFF})
            metadata.extend(blocks)
        elif block == 0x2C:  # image: descriptor, local colour table, LZW code size, data
            if offset + 10 > len(data):
                raise truncated()
            local = data[offset + 9]
            offset += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            offset, _blocks = _gif_sub_blocks(data, offset, keep=False)
        else:
            raise unreadable()


def _gif_sub_blocks(data: bytes, offset: int, keep: bool) -> tuple[int, list[bytes]]:
    blocks = []
    while True:
        if offset >= len(data):
            raise truncated()
        size = data[offset]
        offset += 1
        if size == 0:
            return offset, blocks
        if offset + size > len(data):
            raise truncated()
        if keep:
            blocks.append(data[offset : offset + size])
        offset += size


def _webp_layout(data: bytes) -> list[bytes]:
    metadata = []
    if len(data) < 12:
        raise truncated()
    end = 8 + int.from_bytes(data[4:8], "little")
    if end > len(data):
        raise truncated()
    offset = 12
    while offset < end:
        if offset + 8 > end:
            raise truncated()
        kind = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        chunk_end = offset + 8 + size
        if chunk_end > end:
            raise truncated()
        if kind not in {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF"}:
            metadata.append(data[offset + 8 : chunk_end])
        offset = chunk_end + (size & 1)  # chunks are padded to an even size
    _after_end(data, end)
    return metadata


LAYOUTS = {"PNG": _png_layout, "JPEG": _jpeg_layout, "GIF": _gif_layout, "WEBP": _webp_layout}
