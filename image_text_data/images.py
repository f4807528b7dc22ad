"""Robust image decoding for curation map functions: any cell of an image column to an RGB PIL image, or a clear error.

Web-scale image-text data (LAION, img2dataset shards) holds truncated downloads, HTML error pages saved as `.jpg`,
grayscale, palette, RGBA, CMYK and 16-bit images, and the occasional decompression bomb. A `datasets.map` worker
that meets one of them must not die: `load_image` raises `UndecodableImageError` for anything it cannot turn into an
RGB image, and the callers count that row as a skip (`removed_by_undecodable_image` in the CAT report, an empty
`concept_ids` list in concept labelling).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps

# PIL's own bomb threshold (89.5 M pixels, about 0.25 GB as RGB): beyond it PIL warns, beyond twice it PIL raises.
# We refuse everything beyond the threshold, before the pixels are decoded.
DEFAULT_MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class UndecodableImageError(ValueError):
    """An image cell could not be decoded into an RGB image (the message says why)."""


def _open(value: Any) -> Image.Image:
    """Open (lazily, without decoding pixels) the image held by one cell of an image column."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):  # datasets Image(decode=False): {"bytes": ..., "path": ...}
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise UndecodableImageError("image cell has neither bytes nor a path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) == 0:
            raise UndecodableImageError("image bytes are empty")
        return Image.open(io.BytesIO(bytes(value)))
    if isinstance(value, (str, os.PathLike)):
        return Image.open(value)
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    if value is None:
        raise UndecodableImageError("image cell is None")
    raise UndecodableImageError(f"unsupported image cell of type {type(value).__name__}")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha composited on white, 16/32-bit and float rescaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":  # palette images may carry transparency in `info`
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit PNG/TIFF arrive as "I;16*" or "I"; PIL's own convert("RGB") clips them to 255 (white).
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if (image.mode.startswith("I;16") or pixels.max(initial=0) > 255) else 255.0
        if image.mode == "F" and pixels.max(initial=0) <= 1.0:
            top = 1.0
        gray = np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)  # (H, W)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(value: Any, *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode one cell of an image column into an RGB PIL image.

    Accepts what a `datasets` image column can hold: a PIL image (`Image()` feature), a `{"bytes", "path"}` dict
    (`Image(decode=False)`), raw bytes (`Value("binary")`, webdataset `.jpg` payloads), a file path, or a uint8 array.
    EXIF orientation is applied, transparency is composited on white, CMYK/palette/grayscale become RGB and 16-bit
    images are rescaled (PIL alone would clip them to white).

    Args:
        value: the cell.
        max_pixels: refuse images with more pixels than this (decompression bombs) before decoding them;
            `None` disables the check.

    Returns:
        A fully loaded RGB `PIL.Image.Image`.

    Raises:
        UndecodableImageError: for empty, truncated, non-image or oversized input, with the reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(value)
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise UndecodableImageError(
                    f"image of {image.width}x{image.height} pixels exceeds max_pixels={max_pixels}"
                )
            image.load()  # truncated files fail here, not at open()
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image)
    except UndecodableImageError:
        raise
    except (OSError, ValueError, SyntaxError, TypeError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:  # what PIL raises on bad files
        raise UndecodableImageError(f"{type(error).__name__}: {error}") from error
