"""Text spotting rule of CAT filtering: OCR with rapidocr, and how much of the spotted text repeats the caption.

DiHT (Radenovic et al., CVPR 2023, arXiv 2301.02280, Sec. 3.1) removes pairs whose image contains text that
"substantially overlaps" the caption (rule as quoted in SemDeDup, arXiv 2303.09540): such captions are read off the
image, which teaches a model to spell rather than to see. The paper's text spotter and threshold were not released.
Our definitions:

* **Spotted text**: the lines rapidocr recognises (PP-OCR detection + recognition, its default confidence threshold
  0.5), joined with spaces.
* **Words**: lower-cased runs of letters/digits (`\\w+`) of at least `MIN_WORD_LENGTH` characters, in both the spotted
  text and the caption; shorter runs are mostly OCR noise.
* **Text overlap**: the share of distinct spotted words that also occur as words of the caption,
  `|spotted ∩ caption| / |spotted|`, and 0 when no word is spotted.
* A pair is removed when `text_overlap > max_text_overlap` (default 0.5: more than half of the text in the image is
  in the caption). `max_text_overlap=0` is the rule of the public third-party re-implementation (any shared word).

rapidocr ships its ONNX weights inside its wheel; `TextSpotter` points rapidocr at those files explicitly, so it never
downloads anything, and runs on CUDA through onnxruntime's execution providers when they are available.

**Shapes OCR cannot take.** rapidocr scales an image's short side up to 30 px, pads strips wider than 8:1 and then
scales the short side to 736 px for detection: a 4000x1 spacer raises `ResizeImgError`, and a 5x2000 strip grows to a
3032x12000 detector input that takes tens of GB. Scraped data is full of such spacers and banners, so `TextSpotter`
decides on the shape first (ours):

* an image whose short side is under `min_side` (8 px: no legible glyph fits) is not read:
  `UnreadableImageShapeError`;
* a strip longer than `max_aspect_ratio` (8:1, rapidocr's own padding bound) is cut across its long side into
  about sqrt(aspect) overlapping pieces, laid side by side into one near-square mosaic with blank gutters, and read
  in one call: text on a 2560x40 banner is spotted (rapidocr alone reads nothing there), the detector sees a
  near-square image of about the source's pixels, and words cut at a piece's edge are whole in its neighbour
  (pieces overlap by `2 x` the short side);
* any failure of the engine on one image (`ResizeImgError`, `MemoryError`, an onnxruntime error, ...) is raised as
  `TextSpottingError`, naming the image size; `cat_filter` counts both as rules of their own.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

MIN_WORD_LENGTH = 2
_WORD = re.compile(r"\w+")

MIN_SIDE = 8  # pixels: a short side below this holds no legible glyph
MAX_ASPECT_RATIO = 8.0  # rapidocr's `Global.width_height_ratio`: longer strips are padded (and blown up) by it
GUTTER = 255  # the blank between the pieces of a mosaic: white


class UnreadableImageShapeError(ValueError):
    """The image is too thin (short side under `min_side`) for text spotting; the message gives its size."""


class TextSpottingError(RuntimeError):
    """The OCR engine failed on one image; the message names the image size and the engine's error."""


def strip_pieces(length: int, short: int, count: int) -> list[tuple[int, int]]:
    """`count` overlapping `(start, end)` spans that cover `range(length)`: equal cuts, each widened by
    `2 * short` on both sides (clipped), so that a word up to about four text heights long is whole in one piece.

    Example:
        >>> strip_pieces(100, 5, 2)
        [(0, 60), (40, 100)]
    """
    cut = math.ceil(length / count)
    margin = 2 * short
    return [(max(0, i * cut - margin), min(length, (i + 1) * cut + margin)) for i in range(count)]


def ocr_view(image: Image.Image, *, min_side: int = MIN_SIDE,
             max_aspect_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """The image the OCR engine reads: the image itself, or, for a strip longer than `max_aspect_ratio`, a
    near-square mosaic of its overlapping pieces (`strip_pieces`), laid across the strip's short side with white
    gutters of half its short side (module docstring).

    Raises:
        UnreadableImageShapeError: the short side is under `min_side`.
    """
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if short < min_side:
        raise UnreadableImageShapeError(f"image of {width}x{height} pixels: a side under {min_side} px holds no "
                                        "legible text")
    if long <= max_aspect_ratio * short:
        return image
    count = max(2, round(math.sqrt(long / short)))  # pieces of ~sqrt(r)*short by short: a near-square mosaic
    pieces = strip_pieces(long, short, count)
    piece_long = max(end - start for start, end in pieces)
    gutter = max(1, short // 2)
    across = count * short + (count - 1) * gutter
    horizontal = width >= height
    mosaic = Image.new("RGB", (piece_long, across) if horizontal else (across, piece_long), (GUTTER,) * 3)
    for i, (start, end) in enumerate(pieces):
        offset = i * (short + gutter)
        if horizontal:  # pieces of a wide banner stacked top to bottom, in reading order
            mosaic.paste(image.crop((start, 0, end, height)), (0, offset))
        else:  # pieces of a tall strip side by side, left to right
            mosaic.paste(image.crop((0, start, width, end)), (offset, 0))
    return mosaic

# The three models rapidocr's default config resolves to, as shipped in the rapidocr wheel (`rapidocr/models/`).
BUNDLED_MODELS = {
    "Det.model_path": "PP-OCRv6_det_small.onnx",
    "Cls.model_path": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "Rec.model_path": "PP-OCRv6_rec_small.onnx",
}


def words(text: str | None) -> set[str]:
    """The distinct lower-cased words (`\\w+`, at least `MIN_WORD_LENGTH` characters) of a text."""
    return {w for w in _WORD.findall((text or "").lower()) if len(w) >= MIN_WORD_LENGTH}


def text_overlap(spotted_text: str | None, caption: str | None) -> float:
    """Share of the distinct words spotted in the image that also occur in the caption (DiHT's CAT text rule).

    Args:
        spotted_text: the text OCR found in the image.
        caption: the pair's caption.

    Returns:
        `|words(spotted) ∩ words(caption)| / |words(spotted)|`, and 0.0 when no word was spotted.

    Example:
        >>> text_overlap("BIG SALE today 50%", "a big sale in a shop")
        0.5
    """
    spotted = words(spotted_text)
    if not spotted:
        return 0.0
    return len(spotted & words(caption)) / len(spotted)


def bundled_model_params() -> dict[str, str]:
    """rapidocr parameters that point at the weights inside the installed rapidocr wheel (no download)."""
    import rapidocr

    folder = Path(rapidocr.__file__).resolve().parent / "models"
    params = {}
    for key, filename in BUNDLED_MODELS.items():
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"rapidocr's bundled model {path} is missing; reinstall rapidocr (>=3.10 ships its weights) or "
                f"pass ocr_params={{'{key}': '/path/to/{filename}'}}"
            )
        params[key] = str(path)
    return params


class TextSpotter:
    """Batched text spotting with rapidocr, built lazily so that it can be shipped to `datasets.map` workers.

    Args:
        device: `"cpu"`, `"cuda"`, or `None` for CUDA when onnxruntime offers `CUDAExecutionProvider`.
        num_threads: onnxruntime intra-op threads per process (`None`: onnxruntime's default, all cores). CAT
            filtering with `num_proc=N` gives each worker `cpu_count // N` so workers do not oversubscribe the CPU.
        params: extra rapidocr parameters (`{"Det.limit_side_len": 960, "Global.text_score": 0.6, ...}`); they
            override ours.
        engine: an OCR engine to use instead of rapidocr: a picklable callable `engine(rgb_pil_image)` returning an
            object with `txts` (the recognised lines), as `rapidocr.RapidOCR` does.
        min_side, max_aspect_ratio: the shape rules of the module docstring (8 px, 8:1).
    """

    def __init__(self, device: str | None = None, num_threads: int | None = None, params: dict[str, Any] | None = None,
                 *, engine: Callable[[Image.Image], Any] | None = None, min_side: int = MIN_SIDE,
                 max_aspect_ratio: float = MAX_ASPECT_RATIO):
        self.device, self.num_threads, self.params = device, num_threads, dict(params or {})
        self.min_side, self.max_aspect_ratio = min_side, max_aspect_ratio
        self._given_engine = engine
        self._engine = None

    def __getstate__(self) -> dict:  # onnxruntime sessions do not pickle; each worker builds its own
        return {**self.__dict__, "_engine": None}

    def rapidocr_params(self) -> dict[str, Any]:
        """The parameters given to `rapidocr.RapidOCR(params=...)`."""
        import onnxruntime

        use_cuda = self.device == "cuda" or (
            self.device is None and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        )
        params: dict[str, Any] = {**bundled_model_params(), "Global.log_level": "error",
                                  "EngineConfig.onnxruntime.use_cuda": use_cuda}
        if self.num_threads is not None:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = max(1, min(self.num_threads, os.cpu_count()))
        return {**params, **self.params}

    @property
    def engine(self):
        if self._given_engine is not None:
            return self._given_engine
        if self._engine is None:
            from rapidocr import RapidOCR

            self._engine = RapidOCR(params=self.rapidocr_params())
        return self._engine

    def spot(self, image: Image.Image | np.ndarray) -> str:
        """The text recognised in one RGB image, lines joined with spaces ("" when there is none).

        Raises:
            UnreadableImageShapeError: the image is too thin to hold legible text (not read at all).
            TextSpottingError: the engine failed on this image (any `Exception` it raised, chained).
        """
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))  # rapidocr reads bare arrays as BGR; ours are RGB
        view = ocr_view(image.convert("RGB"), min_side=self.min_side, max_aspect_ratio=self.max_aspect_ratio)
        try:
            result = self.engine(view)
        except Exception as error:  # ResizeImgError, MemoryError, onnxruntime's errors, ...: one image, not the run
            raise TextSpottingError(f"OCR failed on an image of {image.width}x{image.height} pixels (read as "
                                    f"{view.width}x{view.height}): {type(error).__name__}: {error}") from error
        return " ".join(result.txts) if getattr(result, "txts", None) else ""

    def __call__(self, images: Sequence[Image.Image | np.ndarray]) -> list[str]:
        """Spotted text of each image of a batch."""
        return [self.spot(image) for image in images]
