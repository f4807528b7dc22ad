"""Hand-made image-text pairs for the curation tests: images rendered with PIL, encoded in the formats web data holds.

Every image is built here, offline; no file is read or downloaded.
"""

from __future__ import annotations

import io

import numpy as np
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter, ImageFont

SIZE = 224  # the resolution of the DiHT/CLIP training images


def encode(image: PILImage.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def scene(seed: int = 0, size: int = SIZE) -> PILImage.Image:
    """A textless picture: a colour gradient with a blurred triangle (a circle would read as the letter "O")."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(60, 200, size=3)
    pixels = np.stack([base[c] + 40 * (x if c % 2 else y) for c in range(3)], axis=-1)  # (H, W, 3)
    image = PILImage.fromarray(pixels.clip(0, 255).astype(np.uint8))
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    corners = [(cx, cy - 0.27 * size), (cx - 0.31 * size, cy + 0.22 * size), (cx + 0.31 * size, cy + 0.22 * size)]
    ImageDraw.Draw(image).polygon(corners, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image.filter(ImageFilter.GaussianBlur(3))


def text_image(text: str, size: int = SIZE, font_size: int = 28) -> PILImage.Image:
    """Black text on a white background, one line per "\\n"-separated part, in PIL's bundled font."""
    image = PILImage.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    for line_number, line in enumerate(text.split("\n")):
        draw.text((12, size // 3 + line_number * (font_size + 16)), line, fill="black", font=font)
    return image


def truncated_jpeg() -> bytes:
    data = encode(scene(5), "JPEG")
    return data[: len(data) // 2]


def sixteen_bit_png(value: int = 40000) -> bytes:
    """A 16-bit grayscale PNG whose pixels all hold `value` (of 65535)."""
    return encode(PILImage.fromarray(np.full((64, 64), value, dtype=np.uint16)), "PNG")



ACTION_CAPTION = "a brown dog runs on the green grass"


def cat_rows() -> list[tuple[str | None, bytes | None, str | None]]:
    """(caption, image bytes, the first CAT rule the row fails by the documented definitions, or None if kept)."""
    return [
        ("a dog", encode(scene(0)), "complexity"),  # one object, no attribute or relation
        ("", encode(scene(1)), "empty_caption"),
        (None, encode(scene(1)), "empty_caption"),
        ("a brown dog on the green grass", encode(scene(2)), "actions"),  # complex, but no verb
        (ACTION_CAPTION, encode(scene(2)), None),
        ("a man is riding a red bike", encode(text_image("OPEN DAILY")), None),  # text unrelated to the caption
        ("a woman holds a big sign for the sale", encode(text_image("BIG SALE")), "text_spotting"),
        (ACTION_CAPTION, truncated_jpeg(), "undecodable_image"),
        (ACTION_CAPTION, b"<html>404 not found</html>", "undecodable_image"),
        (ACTION_CAPTION, None, "undecodable_image"),
        ("a dog", b"not an image", "complexity"),  # caption rules first: the image is never decoded
    ]


def image_mode_rows() -> list[tuple[str, bytes, None]]:
    """Pairs that pass every caption rule, with images in the PIL modes web data holds: all must be kept."""
    rgba = scene(3).convert("RGBA")
    rgba.putalpha(128)
    caption = "a small cat sleeps on the red sofa"
    return [
        (caption, encode(scene(4).convert("L")), None),  # grayscale
        (caption, encode(rgba), None),  # RGBA
        (caption, encode(scene(6).convert("CMYK"), "JPEG"), None),  # CMYK
        (caption, sixteen_bit_png(), None),  # 16-bit
        (caption, encode(scene(7).convert("P")), None),  # palette
    ]


def cat_dataset(rows=None) -> Dataset:
    """The rows above as an in-memory dataset with an `Image()` column (bytes stored undecoded, as on the Hub)."""
    rows = cat_rows() if rows is None else rows
    images = [None if data is None else {"bytes": data, "path": None} for _, data, _ in rows]
    features = Features({"image": Image(), "caption": Value("string"), "row": Value("int64")})
    return Dataset.from_dict({"image": images, "caption": [c for c, _, _ in rows], "row": list(range(len(rows)))},
                             features=features)
