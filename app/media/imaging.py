"""Image processing core of the media pipeline: sniffing, safe decoding, renditions. Bytes in, bytes out."""

import hashlib
import io
import json
import math
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from PIL import Image, ImageCms, ImageDraw, ImageFont, ImageOps

from app.lib.json_depth import MAX_JSON_DEPTH, json_depth_ok

MB = 1024 * 1024
SNIFF_BYTES = 512
MAX_PIXELS = 50_000_000
# An avatar is shown at most AVATAR_EDGE px wide; a 12 Mpx phone photo fits its cap, and decoding one
# at the cap costs about 110 MB (RGBA plus its flattened copy) where 50 Mpx cost over 700 MB.
AVATAR_EDGE = 800
AVATAR_MAX_PIXELS = 16_000_000
DECODERS = ("JPEG", "PNG", "WEBP", "GIF")
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})

PREVIEW_EDGE = 1600
THUMBNAIL_EDGES: Mapping[str, int] = MappingProxyType(  # largest first: each is made from the one before
    {"thumbnail-lg": 800, "thumbnail-md": 400, "thumbnail-sm": 150}
)
JPEG_QUALITY = 85
WEBP_QUALITY = 80
HIGH_RES_QUALITY = 92
WATERMARK_TEXT = "DynamicVault"

_FORMAT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_MP4_BRANDS = frozenset(
    {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"dash"}
)
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 2.0


class MediaRejected(Exception):
    """Uploaded bytes that the pipeline refuses; `code` is stable and safe to show to the uploader."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):
        # Raised in the API's JSON check processes too: it must come back across the pipe whole.
        return (type(self), (self.code, self.message))


class UploadPurpose(StrEnum):
    IMAGE = "image"
    AVATAR = "avatar"
    DOCUMENT = "document"
    MODEL = "model"
    VIDEO = "video"


@dataclass(frozen=True, slots=True)
class UploadRule:
    content_types: frozenset[str]
    max_bytes: int


UPLOAD_RULES: Mapping[UploadPurpose, UploadRule] = MappingProxyType(
    {
        UploadPurpose.IMAGE: UploadRule(IMAGE_TYPES, 25 * MB),
        UploadPurpose.AVATAR: UploadRule(frozenset({"image/jpeg", "image/png", "image/webp"}), 5 * MB),
        UploadPurpose.DOCUMENT: UploadRule(frozenset({"application/pdf", "application/json"}), 50 * MB),
        # Models come with their textures (models/{tokenId}/textures/*.jpg).
        UploadPurpose.MODEL: UploadRule(
            frozenset({"model/gltf-binary", "image/jpeg", "image/png"}), 200 * MB
        ),
        UploadPurpose.VIDEO: UploadRule(frozenset({"video/mp4"}), 2048 * MB),
    }
)


@dataclass(frozen=True, slots=True)
class EncodedImage:
    data: bytes
    width: int
    height: int
    content_type: str
    sha256: str

    @property
    def extension(self) -> str:
        """File extension for the content type."""
        return {"image/jpeg": "jpg", "image/webp": "webp"}[self.content_type]


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    width: int  # of the original as displayed, i.e. after EXIF orientation
    height: int
    format: str  # Pillow's name of the original's format: JPEG, MPO, PNG, WEBP, GIF
    sha256: str  # of the original bytes
    renditions: Mapping[str, EncodedImage]  # by file name: "thumbnail-sm.jpg", "preview.jpg", ...

    @property
    def content_type(self) -> str:
        """Content type of the original."""
        return _FORMAT_TYPES[self.format]


def sniff_content_type(head: bytes) -> str | None:
    """Content type recognised from the first bytes of a file (read SNIFF_BYTES), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"glTF"):
        return "model/gltf-binary"
    if head[4:8] == b"ftyp" and _iso_brands(head) & _MP4_BRANDS:
        return "video/mp4"
    if head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1] in (b"{", b"["):
        return "application/json"
    return None


def _iso_brands(head: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO BMFF `ftyp` box; HEIC/AVIF share the box but not the brands."""
    end = min(int.from_bytes(head[:4], "big"), len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}


def normalize_content_type(content_type: str) -> str:
    """Lower-cased media type without parameters, with common aliases resolved."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return _TYPE_ALIASES.get(media_type, media_type)


def content_type_matches(sniffed: str | None, claimed: str) -> bool:
    """Whether the sniffed content type is the one the uploader claimed."""
    return sniffed is not None and sniffed == normalize_content_type(claimed)


def check_upload(purpose: UploadPurpose | str, claimed_type: str, head: bytes, size: int) -> str:
    """Return the sniffed content type if the upload is allowed for its purpose, else raise MediaRejected."""
    rule = UPLOAD_RULES[UploadPurpose(purpose)]
    if size > rule.max_bytes:
        raise MediaRejected("too_large", f"{size} bytes exceeds the {rule.max_bytes} allowed for {purpose}")
    sniffed = sniff_content_type(head)
    if sniffed not in rule.content_types:
        found = sniffed or "unrecognised content"
        raise MediaRejected("unsupported_format", f"{found} is not allowed for {purpose}")
    if not content_type_matches(sniffed, claimed_type):
        raise MediaRejected("type_mismatch", f"content is {sniffed}, claimed {claimed_type}")
    return sniffed


MAX_JSON_BYTES = 5 * MB  # metadata is small; this bounds the time and memory one check takes
_UTF8_BOM = b"\xef\xbb\xbf"


def _utf8_json_text(data: bytes) -> str:
    """The text of a UTF-8 JSON body (a BOM tolerated); MediaRejected for UTF-16, UTF-32 or bad UTF-8."""
    data = data.removeprefix(_UTF8_BOM)
    # json.loads(bytes) would also take UTF-16 and UTF-32, where a quote or a backslash can be half of
    # another character: the depth scan, which reads UTF-8, would see other strings than the parser.
    if json.detect_encoding(data) != "utf-8":
        raise MediaRejected("json_not_utf8", "JSON documents must be UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MediaRejected("json_not_utf8", f"JSON documents must be UTF-8: {exc.reason}") from exc


def check_json(data: bytes) -> None:
    """Raise MediaRejected unless a whole body is UTF-8 JSON within MAX_JSON_BYTES and MAX_JSON_DEPTH."""
    if len(data) > MAX_JSON_BYTES:
        raise MediaRejected("too_large", f"{len(data)} bytes exceeds the {MAX_JSON_BYTES} allowed for JSON")
    text = _utf8_json_text(data)
    # Valid UTF-8 never has a quote, backslash or bracket byte inside another character, so the scan of
    # its bytes sees the very brackets and strings that json.loads sees in the text.
    if not json_depth_ok(data):
        raise MediaRejected("json_too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MediaRejected("invalid_json", "not valid JSON") from exc


def is_json(data: bytes) -> bool:
    """Whether a whole body parses as JSON within the limits of check_json (sniffing sees one bracket)."""
    try:
        check_json(data)
    except MediaRejected:
        return False
    return True


def fit_within(size: tuple[int, int], edge: int) -> tuple[int, int]:
    """Size scaled down to fit a square box of `edge` pixels, aspect ratio kept, never scaled up."""
    width, height = size
    scale = min(1.0, edge / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def header_pixels(data: bytes) -> int:
    """Pixels an image decodes to, read from its header alone; 0 when no allowed decoder reads it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=DECODERS) as image:
                width, height = image.size
    except (
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        struct.error,
    ):
        return 0  # the decode refuses it from the same header, before any pixel
    return width * height


def render_variants(
    data: bytes, *, max_pixels: int = MAX_PIXELS, watermark_text: str = WATERMARK_TEXT
) -> ProcessedImage:
    """Decode once and make the JPEG+WebP thumbnails, the preview and the watermarked preview."""
    image, source_format, size = _decode(data, max_pixels, draft_edge=PREVIEW_EDGE)
    return _variants(data, image, source_format, size, watermark_text)


def render_with_highres(
    data: bytes, *, max_pixels: int = MAX_PIXELS, watermark_text: str = WATERMARK_TEXT
) -> tuple[ProcessedImage, bytes]:
    """The renditions of render_variants and the full-size JPEG of strip_metadata, from one decode."""
    image, source_format, size = _decode(data, max_pixels)
    highres = _encode(image, "image/jpeg", quality=HIGH_RES_QUALITY).data
    return _variants(data, image, source_format, size, watermark_text), highres


def _variants(
    data: bytes, image: Image.Image, source_format: str, size: tuple[int, int], watermark_text: str
) -> ProcessedImage:
    width, height = size
    current = _resize(image, fit_within(size, PREVIEW_EDGE))
    renditions = {
        "preview.jpg": _encode(current, "image/jpeg"),
        "watermarked.jpg": _encode(add_watermark(current, watermark_text), "image/jpeg"),
    }
    for name, edge in THUMBNAIL_EDGES.items():
        current = _resize(current, fit_within((width, height), edge))
        renditions[f"{name}.jpg"] = _encode(current, "image/jpeg")
        renditions[f"{name}.webp"] = _encode(current, "image/webp")
    return ProcessedImage(width, height, source_format, _sha256(data), MappingProxyType(renditions))


def render_avatar(data: bytes, *, max_pixels: int = AVATAR_MAX_PIXELS) -> EncodedImage:
    """Metadata-free JPEG of at most AVATAR_EDGE px, decoded once under the avatar pixel cap."""
    image, _, size = _decode(data, max_pixels, draft_edge=AVATAR_EDGE)
    return _encode(_resize(image, fit_within(size, AVATAR_EDGE)), "image/jpeg")


def strip_metadata(data: bytes, *, max_pixels: int = MAX_PIXELS) -> bytes:
    """Full-resolution JPEG of an image with orientation applied and all metadata removed."""
    image, _, _ = _decode(data, max_pixels)
    return _encode(image, "image/jpeg", quality=HIGH_RES_QUALITY).data


def add_watermark(image: Image.Image, text: str = WATERMARK_TEXT) -> Image.Image:
    """RGB copy of an image with a semi-transparent diagonal band carrying `text`."""
    width, height = image.size
    band_height = max(12, min(width, height) // 7)
    band = Image.new("RGBA", (math.ceil(math.hypot(width, height)), band_height), (255, 255, 255, 72))
    font = ImageFont.load_default(size=max(8, band_height * 3 // 5))
    label = "   ".join([text] * 8)
    ImageDraw.Draw(band).text(
        (band.width / 2, band_height / 2), label, fill=(0, 0, 0, 120), font=font, anchor="mm"
    )
    band = band.rotate(math.degrees(math.atan2(height, width)), Image.Resampling.BILINEAR, expand=True)
    overlay = Image.new("RGBA", image.size)
    overlay.paste(band, ((width - band.width) // 2, (height - band.height) // 2))
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def _decode(
    data: bytes, max_pixels: int, draft_edge: int | None = None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """Decode once to metadata-free sRGB, refusing bombs from the header; with format and displayed size."""
    try:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it an error without
        # touching the global limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODERS)
            width, height = image.size
            if width * height > max_pixels:
                raise MediaRejected("decompression_bomb", f"{width}x{height} exceeds {max_pixels} pixels")
            if draft_edge:
                # JPEG only: the decoder scales by 1/2, 1/4 or 1/8 while staying above the requested size.
                image.draft("RGB", fit_within(image.size, draft_edge))
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            ImageOps.exif_transpose(image, in_place=True)
            image.load()  # decoding errors surface here, inside the handlers below
            rgb = _to_srgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaRejected("decompression_bomb", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        sniffed = sniff_content_type(data[:SNIFF_BYTES])
        if isinstance(exc, Image.UnidentifiedImageError) and sniffed and sniffed not in IMAGE_TYPES:
            raise MediaRejected("unsupported_format", f"{sniffed} is not an image") from exc
        raise MediaRejected("corrupt_image", f"cannot decode image: {exc}") from exc
    # Derived images copy `info` (exif, xmp, icc_profile, comment...) and encoders read some of it.
    rgb.info = {}
    return rgb, image.format or "", (width, height)


def _to_srgb(image: Image.Image) -> Image.Image:
    """RGB image in sRGB with alpha flattened on white; full-size copies are made only where needed."""
    icc = image.info.get("icc_profile")
    if image.has_transparency_data:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        image = Image.new("RGB", image.size, "white")
        image.paste(rgba, mask=rgba)  # the alpha band is the mask
    elif image.mode in ("I", "I;16"):
        image = image.point(lambda value: value / 256).convert("L")
    elif image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    if icc:
        try:
            if image.mode == "RGB":
                ImageCms.profileToProfile(image, io.BytesIO(icc), _SRGB, inPlace=True)
                return image
            return ImageCms.profileToProfile(image, io.BytesIO(icc), _SRGB, outputMode="RGB")
        except ImageCms.PyCMSError:
            pass  # a profile that does not fit the pixels is dropped, as browsers do
    return image if image.mode == "RGB" else image.convert("RGB")


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, _RESAMPLE, reducing_gap=_REDUCING_GAP)


def _encode(image: Image.Image, content_type: str, quality: int | None = None) -> EncodedImage:
    """Encode passing no exif, icc_profile or xmp, so none is written."""
    buffer = io.BytesIO()
    if content_type == "image/jpeg":
        image.save(buffer, "JPEG", quality=quality or JPEG_QUALITY, optimize=True)
    else:
        image.save(buffer, "WEBP", quality=quality or WEBP_QUALITY, method=4)
    data = buffer.getvalue()
    return EncodedImage(data, image.width, image.height, content_type, _sha256(data))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
