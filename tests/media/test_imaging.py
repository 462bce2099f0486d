import hashlib
import io
import json
import struct
import time
import warnings

import pytest
from PIL import Image, ImageChops, ImageCms, ImageFile, ImageStat

from app.media import imaging
from app.media.imaging import MediaRejected, UploadPurpose
from tests.media import support

EXPECTED_RENDITIONS = {
    "preview.jpg": 1600,
    "watermarked.jpg": 1600,
    "thumbnail-lg.jpg": 800,
    "thumbnail-lg.webp": 800,
    "thumbnail-md.jpg": 400,
    "thumbnail-md.webp": 400,
    "thumbnail-sm.jpg": 150,
    "thumbnail-sm.webp": 150,
}
SECRETS = (b"secret-location", b"shot at home", b"PhoneMaker")


def _photo(size: tuple[int, int]) -> Image.Image:
    return Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
        ],
    )


def _save(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **params)
    return buffer.getvalue()


def _jpeg_with_metadata(image: Image.Image, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = orientation
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 22.0, 12.5), 3: "E", 4: (4.0, 53.0, 30.1)})
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-location</x:xmpmeta>'
    return _save(image, "JPEG", exif=exif, icc_profile=icc, xmp=xmp, comment=b"shot at home")


def _record_decodes(monkeypatch) -> list[tuple[int, int]]:
    """The sizes of the images Pillow decodes from now on, in order."""
    loads = []
    real_load = ImageFile.ImageFile.load

    def recording_load(image):
        loads.append(image.size)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return loads


def _record_opens(monkeypatch) -> list:
    """What Pillow opens from now on (each `Image.open` argument), in order."""
    opened = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return opened


def _open(encoded: imaging.EncodedImage) -> Image.Image:
    image = Image.open(io.BytesIO(encoded.data))
    image.load()
    return image


def _assert_no_metadata(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        assert not image.getexif()
        assert not image.getexif().get_ifd(0x8825)
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment"} & image.info.keys()
    assert b"Exif\x00\x00" not in data
    for secret in SECRETS:
        assert secret not in data


def _assert_renditions_fit(processed: imaging.ProcessedImage) -> None:
    width, height = processed.width, processed.height
    assert set(processed.renditions) == set(EXPECTED_RENDITIONS)
    for name, edge in EXPECTED_RENDITIONS.items():
        rendition = processed.renditions[name]
        image = _open(rendition)
        assert image.size == (rendition.width, rendition.height)
        assert image.mode == "RGB"
        assert Image.MIME[image.format] == rendition.content_type
        assert rendition.sha256 == hashlib.sha256(rendition.data).hexdigest()
        assert max(image.size) == min(edge, max(width, height))
        # Aspect ratio kept to within the rounding of one pixel.
        assert abs(image.width * height - image.height * width) <= max(width, height)


def test_sniff_recognises_supported_types():
    image = _photo((32, 24))
    samples = {
        "image/jpeg": _save(image, "JPEG"),
        "image/png": _save(image, "PNG"),
        "image/webp": _save(image, "WEBP"),
        "image/gif": _save(image, "GIF"),
        "application/pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
        "application/json": b'\xef\xbb\xbf \r\n\t{"tokenId": 1}',
        "model/gltf-binary": b"glTF" + struct.pack("<II", 2, 1024) + b"\x00" * 12,
        "video/mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42\x00\x00\x00\x08free",
    }
    for content_type, data in samples.items():
        assert imaging.sniff_content_type(data[: imaging.SNIFF_BYTES]) == content_type
    assert imaging.sniff_content_type(b"[1, 2]") == "application/json"


def test_sniff_rejects_unknown_and_lookalikes():
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    assert imaging.sniff_content_type(heic) is None
    assert imaging.sniff_content_type(b"") is None
    assert imaging.sniff_content_type(b"MZ\x90\x00executable") is None
    assert imaging.sniff_content_type(b"<html><body>{}</body></html>") is None
    assert imaging.sniff_content_type(_save(_photo((8, 8)), "BMP")) is None


def test_content_type_mismatch_is_detected():
    png = _save(_photo((16, 16)), "PNG")
    sniffed = imaging.sniff_content_type(png)
    assert not imaging.content_type_matches(sniffed, "image/jpeg")
    assert imaging.content_type_matches(sniffed, "IMAGE/PNG; charset=binary")
    assert imaging.content_type_matches("image/jpeg", "image/jpg")
    assert not imaging.content_type_matches(None, "application/octet-stream")
    with pytest.raises(MediaRejected) as excinfo:
        imaging.check_upload(UploadPurpose.IMAGE, "image/jpeg", png, len(png))
    assert excinfo.value.code == "type_mismatch"


def test_check_upload_applies_purpose_rules():
    png = _save(_photo((16, 16)), "PNG")
    assert imaging.check_upload("image", "image/png", png, len(png)) == "image/png"
    assert imaging.check_upload("document", "application/json", b'{"a": 1}', 8) == "application/json"
    cases = [
        (UploadPurpose.AVATAR, "image/png", png, 5 * imaging.MB + 1, "too_large"),
        (UploadPurpose.IMAGE, "application/pdf", b"%PDF-1.4\n", 9, "unsupported_format"),
        (UploadPurpose.DOCUMENT, "application/pdf", png, len(png), "unsupported_format"),
        (UploadPurpose.VIDEO, "video/mp4", b"garbage", 7, "unsupported_format"),
    ]
    for purpose, claimed, head, size, code in cases:
        with pytest.raises(MediaRejected) as excinfo:
            imaging.check_upload(purpose, claimed, head, size)
        assert excinfo.value.code == code
    assert imaging.UPLOAD_RULES[UploadPurpose.VIDEO].max_bytes == 2 * 1024**3


def test_is_json_checks_the_whole_body():
    assert imaging.is_json(b'\xef\xbb\xbf{"name": "Vault", "tags": [1, 2]}')
    assert not imaging.is_json(b'{"name": ')
    assert not imaging.is_json(b"[" * 100_000)


def test_an_unterminated_string_of_escaped_quotes_is_refused_in_linear_time():
    # 300 brackets, then `"\"\"\"...` that never closes: the string scan used to retry from every quote.
    for size in (64 * 1024, 1024 * 1024):
        hostile = b"[" * 300 + b'"' + b'\\"' * (size // 2)
        started = time.perf_counter()
        with pytest.raises(MediaRejected) as excinfo:
            imaging.check_json(hostile)
        elapsed = time.perf_counter() - started
        assert excinfo.value.code == "json_too_deep"
        assert elapsed < 1.0, f"{len(hostile)} bytes took {elapsed:.2f} s"


def test_json_check_reads_strings_as_json_does_and_caps_the_size():
    brackets_in_strings = json.dumps({"a": "[" * 1000 + '"\\', "b": [["{" * 500]]}).encode()
    imaging.check_json(brackets_in_strings)
    assert imaging.is_json(brackets_in_strings)
    for data, code in (
        (b"[" * 300 + b"]" * 300, "json_too_deep"),
        (b'["' + b"[" * 300 + b"\\", "invalid_json"),
        (b"[" + b"0," * (imaging.MAX_JSON_BYTES // 2) + b"0]", "too_large"),
    ):
        with pytest.raises(MediaRejected) as excinfo:
            imaging.check_json(data)
        assert excinfo.value.code == code


def _utf16_hidden_brackets(depth: int) -> bytes:
    """UTF-16LE JSON whose U+5C41 is the bytes `41 5C`: a byte scan sees its closing quote escaped."""
    return ('["\u5c41",' + "[" * depth + "]" * depth + "]").encode("utf-16-le")


def test_json_in_utf16_or_utf32_is_refused_before_its_brackets_are_counted_or_parsed():
    for depth in (300, 90_000):  # past the limit; deep enough to exhaust json.loads' C recursion
        hostile = _utf16_hidden_brackets(depth)
        assert imaging.sniff_content_type(hostile[: imaging.SNIFF_BYTES]) == "application/json"
        with pytest.raises(MediaRejected) as excinfo:
            imaging.check_json(hostile)
        assert excinfo.value.code == "json_not_utf8"
    for encoding in ("utf-16", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"):
        with pytest.raises(MediaRejected) as excinfo:
            imaging.check_json('{"edition": 1}'.encode(encoding))
        assert excinfo.value.code == "json_not_utf8", encoding
    with pytest.raises(MediaRejected) as excinfo:
        imaging.check_json(b'{"name": "\xff"}')  # not UTF-8 at all
    assert excinfo.value.code == "json_not_utf8"
    imaging.check_json('\ufeff{"name": "Caf\u00e9 [{"}'.encode())  # UTF-8, with or without a BOM


def test_render_variants_from_large_jpeg_fits_every_size():
    data = _save(_photo((3200, 2400)), "JPEG", quality=90)

    processed = imaging.render_variants(data)

    assert (processed.width, processed.height) == (3200, 2400)
    assert processed.format == "JPEG"
    assert processed.content_type == "image/jpeg"
    assert processed.sha256 == hashlib.sha256(data).hexdigest()
    _assert_renditions_fit(processed)
    assert (processed.renditions["preview.jpg"].width, processed.renditions["preview.jpg"].height) == (
        1600,
        1200,
    )


def test_render_variants_never_upscales_a_small_portrait_png():
    processed = imaging.render_variants(_save(_photo((500, 1000)), "PNG"))

    _assert_renditions_fit(processed)
    sizes = {name: (r.width, r.height) for name, r in processed.renditions.items()}
    assert sizes["preview.jpg"] == (500, 1000)
    assert sizes["thumbnail-lg.webp"] == (400, 800)
    assert sizes["thumbnail-sm.jpg"] == (75, 150)


def test_render_variants_decodes_the_source_once(monkeypatch):
    opened = _record_opens(monkeypatch)

    imaging.render_variants(_save(_photo((1000, 800)), "JPEG"))

    assert len(opened) == 1


def test_outputs_carry_no_exif_gps_xmp_icc_or_comment():
    data = _jpeg_with_metadata(_photo((900, 600)))
    with Image.open(io.BytesIO(data)) as source:  # the fixture really carries what must be removed
        assert source.getexif().get_ifd(0x8825)[1] == "N"
        assert {"exif", "xmp", "icc_profile", "comment"} <= source.info.keys()

    processed = imaging.render_variants(data)

    for rendition in processed.renditions.values():
        _assert_no_metadata(rendition.data)
    _assert_no_metadata(imaging.strip_metadata(data))


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (300, 200), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 150, 200))  # left half red; orientation 6 turns it into the top
    data = _jpeg_with_metadata(stored, orientation=6)

    processed = imaging.render_variants(data)
    high_res = Image.open(io.BytesIO(imaging.strip_metadata(data)))

    assert (processed.width, processed.height) == (200, 300)
    preview = _open(processed.renditions["preview.jpg"])
    for image in (preview, high_res):
        assert image.size == (200, 300)
        top, bottom = image.getpixel((100, 30)), image.getpixel((100, 270))
        assert top[0] > 200 and top[2] < 60
        assert bottom[2] > 200 and bottom[0] < 60
    assert _open(processed.renditions["thumbnail-sm.jpg"]).size == (100, 150)


def test_png_alpha_is_flattened_on_white():
    image = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    image.paste((0, 160, 0, 255), (200, 0, 400, 300))

    processed = imaging.render_variants(_save(image, "PNG"))

    for name in ("preview.jpg", "thumbnail-md.webp"):
        output = _open(processed.renditions[name])
        left = output.getpixel((output.width // 4, output.height // 2))
        right = output.getpixel((output.width * 3 // 4, output.height // 2))
        assert min(left) > 245
        assert right[1] > 130 and right[0] < 40 and right[2] < 40


def test_cmyk_jpeg_becomes_rgb():
    data = _save(Image.new("CMYK", (300, 200), (0, 255, 255, 0)), "JPEG")

    processed = imaging.render_variants(data)
    high_res = Image.open(io.BytesIO(imaging.strip_metadata(data)))

    for image in (_open(processed.renditions["preview.jpg"]), high_res):
        assert image.mode == "RGB"
        red, green, blue = image.getpixel((150, 100))
        assert red > 200 and green < 60 and blue < 60


def test_gif_with_transparency_renders():
    image = _photo((320, 240)).quantize(64)
    image.paste(0, (0, 0, 40, 40))
    data = _save(image, "GIF", transparency=0)

    processed = imaging.render_variants(data)

    assert processed.format == "GIF"
    _assert_renditions_fit(processed)
    assert min(_open(processed.renditions["preview.jpg"]).getpixel((5, 5))) > 245


def test_decompression_bombs_are_rejected_from_the_header(monkeypatch):
    loads = _record_decodes(monkeypatch)
    filters = list(warnings.filters)
    limit = Image.MAX_IMAGE_PIXELS
    # Over our 50 Mpx default, over Pillow's warning limit, over Pillow's error limit.
    for width, height in [(8000, 8000), (10000, 10000), (30000, 30000)]:
        bomb = support.png_bomb(width, height)
        assert len(bomb) < 150_000

        with pytest.raises(MediaRejected) as excinfo:
            imaging.render_variants(bomb)

        assert excinfo.value.code == "decompression_bomb"
    assert loads == []

    with pytest.raises(MediaRejected) as excinfo:
        imaging.strip_metadata(_save(_photo((200, 200)), "PNG"), max_pixels=10_000)
    assert excinfo.value.code == "decompression_bomb"
    assert warnings.filters == filters
    assert limit == Image.MAX_IMAGE_PIXELS
    processed = imaging.render_variants(_save(_photo((640, 480)), "JPEG"))
    assert processed.renditions["preview.jpg"].width == 640
    assert loads  # the probe does see a real decode


def test_avatars_have_a_lower_pixel_cap_checked_from_the_header(monkeypatch):
    loads = _record_decodes(monkeypatch)
    just_over = support.png_bomb(4001, 4000)  # over the avatar cap, far under the one for asset images
    assert imaging.AVATAR_MAX_PIXELS < 4001 * 4000 < imaging.MAX_PIXELS
    with pytest.raises(MediaRejected) as excinfo:
        imaging.render_avatar(just_over)
    assert excinfo.value.code == "decompression_bomb"
    assert loads == []

    avatar = imaging.render_avatar(_jpeg_with_metadata(_photo((2400, 1200))))
    assert (avatar.width, avatar.height) == (imaging.AVATAR_EDGE, 400)
    assert avatar.content_type == "image/jpeg" and _open(avatar).size == (800, 400)
    _assert_no_metadata(avatar.data)


def test_broken_input_is_rejected_with_a_code():
    jpeg = _save(_photo((640, 480)), "JPEG")
    cases = {
        "corrupt_image": [b"", bytes(range(256)) * 8, jpeg[: len(jpeg) // 2], jpeg[:3] + b"\x00" * 500],
        "unsupported_format": [b"%PDF-1.7\n" + b"\x00" * 100, b'{"not": "an image"}'],
    }
    for code, inputs in cases.items():
        for data in inputs:
            for process in (imaging.render_variants, imaging.strip_metadata):
                with pytest.raises(MediaRejected) as excinfo:
                    process(data)
                assert excinfo.value.code == code, data[:16]


def test_render_with_highres_decodes_once_for_the_renditions_and_the_full_size(monkeypatch):
    data = _jpeg_with_metadata(_photo((2000, 1500)), orientation=6)
    expected = imaging.strip_metadata(data)
    opened = _record_opens(monkeypatch)
    processed, highres = imaging.render_with_highres(data)

    assert len(opened) == 1
    assert highres == expected
    _assert_no_metadata(highres)
    _assert_renditions_fit(processed)
    assert (processed.width, processed.height) == (1500, 2000)


def test_header_pixels_reads_the_size_without_decoding(monkeypatch):
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: loads.append(image.size))
    assert imaging.header_pixels(support.png_bomb(8000, 8000)) == 64_000_000
    assert imaging.header_pixels(support.png_bomb(20_000, 20_000)) == 0  # Pillow refuses its header outright
    assert imaging.header_pixels(_save(_photo((300, 200)), "JPEG")) == 60_000
    assert imaging.header_pixels(b"not an image") == 0
    assert loads == []


def test_strip_metadata_keeps_full_resolution():
    data = _jpeg_with_metadata(_photo((2000, 1500)))

    high_res = imaging.strip_metadata(data)

    with Image.open(io.BytesIO(high_res)) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (2000, 1500))


def test_outputs_are_deterministic():
    data = _jpeg_with_metadata(_photo((1200, 900)), orientation=8)

    first, second = imaging.render_variants(data), imaging.render_variants(data)

    assert {n: r.sha256 for n, r in first.renditions.items()} == {
        n: r.sha256 for n, r in second.renditions.items()
    }
    assert imaging.strip_metadata(data) == imaging.strip_metadata(data)


def test_watermark_is_visible():
    processed = imaging.render_variants(_save(Image.new("RGB", (800, 600), (40, 60, 90)), "PNG"))

    preview = _open(processed.renditions["preview.jpg"])
    watermarked = _open(processed.renditions["watermarked.jpg"])

    assert watermarked.size == preview.size
    difference = ImageChops.difference(preview, watermarked).convert("L")
    assert ImageStat.Stat(difference).mean[0] > 4
    # A band along the diagonal: the corners off it are untouched.
    assert difference.crop((0, 0, 100, 100)).getextrema()[1] < 10
    assert difference.crop((700, 500, 800, 600)).getextrema()[1] < 10
    assert difference.crop((350, 250, 450, 350)).getextrema()[1] > 60
