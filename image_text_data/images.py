"""Robust image decoding for curation map functions: any cell of an image column to an RGB PIL image, or a clear error.

Web-scale image-text data (LAION, img2dataset shards) holds truncated downloads, HTML error pages saved as `.jpg`,
grayscale, palette, RGBA, CMYK and 16-bit images, and the occasional decompression bomb. A `datasets.map` worker
that meets one of them must not die: `load_image` raises `UndecodableImageError` for anything it cannot turn into an
RGB image, and the callers count that row as a skip (`removed_by_undecodable_image` in the CAT report, an empty
`concept_ids` list in concept labelling).

An image can also decode and still be too large for what comes next: a 1x60000 spacer resized by a processor's
shortest-edge rule to 224 px becomes a 224x13,440,000 image of 3 G pixels. `load_image(shortest_edge=S)` refuses,
before decoding, an image whose shortest-edge resize to S would exceed `max_resized_pixels`, with
`ImageTooLargeError` (a subclass of `UndecodableImageError`, so that callers that do not tell the reasons apart still
count it as a skip); `resized_size` and `processor_shortest_edge` give the size and the S of an image processor.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageOps

# PIL's own bomb threshold (89.5 M pixels, about 0.25 GB as RGB): beyond it PIL warns, beyond twice it PIL raises.
# We refuse everything beyond the threshold, before the pixels are decoded.
DEFAULT_MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# The largest image a resize may produce: the bound a source image has (PIL's bomb threshold, about 0.25 GB as RGB
# and 1 GB as the float32 array a processor rescales it to), so that no transform allocates more than a source may.
DEFAULT_MAX_RESIZED_PIXELS = DEFAULT_MAX_IMAGE_PIXELS

# PIL's limit is a module global; `load_image` lifts or raises it for one call, under this lock.
_PIL_LIMIT_LOCK = threading.RLock()


class UndecodableImageError(ValueError):
    """An image cell could not be decoded into an RGB image (the message says why)."""


class ImageTooLargeError(UndecodableImageError):
    """An image decodes, but the resize it is meant for would produce more than `max_resized_pixels` pixels."""


def resized_size(width: int, height: int, shortest_edge: int, longest_edge: int | None = None) -> tuple[int, int]:
    """`(width, height)` after a resize of the shorter side to `shortest_edge`, the aspect ratio kept.

    The rule of transformers' image processors (`get_resize_output_image_size(default_to_square=False)`: the longer
    side is truncated to an integer, and capped at `longest_edge` when given) and of torchvision's `Resize(int)`.

    Example:
        >>> resized_size(60000, 1, 224)
        (13440000, 224)
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"an image of {width}x{height} pixels has no area")
    short, long = min(width, height), max(width, height)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    if longest_edge is not None and new_long > longest_edge:
        new_short, new_long = int(longest_edge * new_short / new_long), longest_edge
    return (new_short, new_long) if width <= height else (new_long, new_short)


def processor_shortest_edge(image_processor: Any) -> tuple[int | None, int | None]:
    """`(shortest_edge, longest_edge)` of an image processor that resizes by its shorter side (CLIP's), else
    `(None, None)` (a processor that resizes to a fixed height and width allocates a bounded image)."""
    size = getattr(image_processor, "size", None)
    if size is None:
        return None, None
    get = size.get if hasattr(size, "get") else (lambda key: getattr(size, key, None))
    return get("shortest_edge"), get("longest_edge")


def _check_resize(width: int, height: int, shortest_edge: int | None, longest_edge: int | None,
                  max_resized_pixels: int | None) -> None:
    if shortest_edge is None or max_resized_pixels is None:
        return
    new_width, new_height = resized_size(width, height, shortest_edge, longest_edge)
    if new_width * new_height > max_resized_pixels:
        raise ImageTooLargeError(
            f"image of {width}x{height} pixels would be resized to {new_width}x{new_height} "
            f"({new_width * new_height:,} pixels) by a shortest-edge resize to {shortest_edge}, more than "
            f"max_resized_pixels={max_resized_pixels:,}")


@contextmanager
def _pil_limit(max_pixels: int | None):
    """PIL's own bomb limit for one decode: lifted when `max_pixels` is None, raised to `max_pixels` when larger
    (PIL would otherwise refuse above its own threshold whatever the caller asked); left alone otherwise, since our
    own check is then the stricter one."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or (max_pixels is not None and max_pixels <= current):
        yield
        return
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


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


def load_image(value: Any, *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, shortest_edge: int | None = None,
               longest_edge: int | None = None,
               max_resized_pixels: int | None = DEFAULT_MAX_RESIZED_PIXELS) -> Image.Image:
    """Decode one cell of an image column into an RGB PIL image.

    Accepts what a `datasets` image column can hold: a PIL image (`Image()` feature), a `{"bytes", "path"}` dict
    (`Image(decode=False)`), raw bytes (`Value("binary")`, webdataset `.jpg` payloads), a file path, or a uint8 array.
    EXIF orientation is applied, transparency is composited on white, CMYK/palette/grayscale become RGB and 16-bit
    images are rescaled (PIL alone would clip them to white).

    Args:
        value: the cell.
        max_pixels: refuse images with more pixels than this (decompression bombs) before decoding them;
            `None` disables the check, PIL's own limit included (for this call), and a limit above PIL's
            (`PIL.Image.MAX_IMAGE_PIXELS`) replaces it.
        shortest_edge: the size the caller will resize the shorter side to (a processor's `shortest_edge`, a
            teacher's resize); with it, an image whose resize would exceed `max_resized_pixels` is refused
            before decoding. `None`: no resize check.
        longest_edge: the processor's cap on the longer side after that resize, if any (see `resized_size`).
        max_resized_pixels: the largest resized image accepted (`None`: no limit).

    Returns:
        A fully loaded RGB `PIL.Image.Image`.

    Raises:
        ImageTooLargeError: the resize to `shortest_edge` would exceed `max_resized_pixels`.
        UndecodableImageError: for empty, truncated, non-image or oversized input, with the reason.
    """
    try:
        with warnings.catch_warnings(), _pil_limit(max_pixels):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(value)
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise UndecodableImageError(
                    f"image of {image.width}x{image.height} pixels exceeds max_pixels={max_pixels}"
                )
            _check_resize(image.width, image.height, shortest_edge, longest_edge, max_resized_pixels)
            image.load()  # truncated files fail here, not at open()
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image)
    except UndecodableImageError:
        raise
    except (OSError, ValueError, SyntaxError, TypeError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:  # what PIL raises on bad files
        raise UndecodableImageError(f"{type(error).__name__}: {error}") from error
