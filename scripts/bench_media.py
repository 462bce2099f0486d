"""Benchmark render_variants against a full decode per output size on 12-megapixel photos."""

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from app.media import imaging

SIZE = (4000, 3000)
NAIVE_OUTPUTS = [
    ("thumbnail-sm", 150),
    ("thumbnail-md", 400),
    ("thumbnail-lg", 800),
    ("preview", imaging.PREVIEW_EDGE),
    ("watermarked", imaging.PREVIEW_EDGE),
]


def make_photo(seed: int) -> bytes:
    """A 4000x3000 JPEG (quality 90) with smooth colour fields, shapes, texture and sensor noise."""
    rng = np.random.default_rng(seed)
    width, height = SIZE
    fields = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(SIZE, Image.BICUBIC)
    draw = ImageDraw.Draw(fields)
    for _ in range(40):
        x, y = rng.integers(0, width), rng.integers(0, height)
        radius = rng.integers(40, 500)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius // 2), fill=colour)
    fields = fields.filter(ImageFilter.GaussianBlur(3))
    texture = Image.fromarray(rng.integers(0, 256, (300, 400), dtype=np.uint8)).resize(SIZE, Image.BICUBIC)
    pixels = np.asarray(fields, dtype=np.int16)
    pixels += (np.asarray(texture, dtype=np.int16)[..., None] - 128) // 4
    pixels += rng.normal(0, 6, pixels.shape).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def naive_variants(data: bytes) -> None:
    """The same outputs as render_variants, decoding the full image again for each size."""
    for name, edge in NAIVE_OUTPUTS:
        with Image.open(io.BytesIO(data)) as source:
            image = ImageOps.exif_transpose(source).convert("RGB")
        image = image.resize(imaging.fit_within(image.size, edge), Image.Resampling.LANCZOS)
        if name == "watermarked":
            image = imaging.add_watermark(image)
        image.save(io.BytesIO(), "JPEG", quality=imaging.JPEG_QUALITY, optimize=True)
        if name.startswith("thumbnail"):
            image.save(io.BytesIO(), "WEBP", quality=imaging.WEBP_QUALITY, method=4)


def time_ms(process: Callable[[bytes], object], data: bytes) -> float:
    start = time.perf_counter()
    process(data)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    """Print median ms per image and per megapixel for each path, and the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    photos = [make_photo(seed) for seed in range(args.images)]
    paths: dict[str, Callable[[bytes], object]] = {
        "naive: full decode per size": naive_variants,
        "render_variants": imaging.render_variants,
        "strip_metadata (full res)": imaging.strip_metadata,
    }
    for process in paths.values():  # warm-up: imports, font loading, allocator
        process(photos[0])
    timings: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(args.rounds):
        for data in photos:
            for label, process in paths.items():
                timings[label].append(time_ms(process, data))

    megapixels = SIZE[0] * SIZE[1] / 1e6
    average_mb = statistics.mean(len(data) for data in photos) / 1e6
    print(f"{args.images} x {SIZE[0]}x{SIZE[1]} JPEG q90 (avg {average_mb:.1f} MB), {args.rounds} rounds")
    print(f"{'path':<30}{'ms/image':>10}{'ms/Mpx':>9}")
    medians = {label: statistics.median(values) for label, values in timings.items()}
    for label, median in medians.items():
        print(f"{label:<30}{median:>10.1f}{median / megapixels:>9.2f}")
    speedup = medians["naive: full decode per size"] / medians["render_variants"]
    print(f"speed-up naive / render_variants: {speedup:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
