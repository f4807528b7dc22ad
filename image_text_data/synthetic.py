"""Synthetic images for benchmarks and tests of image handling: textless scenes, rendered text, encoded bytes.

Everything is drawn with PIL from a seed, offline. `image_text_data.demo` builds the captioned demo dataset; this
module has the plain images that exercise decoding and text spotting (a picture with no text in it, black words on
white, the bytes of any image in a chosen format).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter, ImageFont

__all__ = ["SIZE", "encode", "scene", "text_image"]

SIZE = 224  # the resolution of the DiHT/CLIP training images


def encode(image: PILImage.Image, format: str = "PNG") -> bytes:
    """The bytes of `image` in `format` (PNG, JPEG, ...), as a file or a webdataset shard holds them."""
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
