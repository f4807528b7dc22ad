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
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

MIN_WORD_LENGTH = 2
_WORD = re.compile(r"\w+")

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
    """

    def __init__(self, device: str | None = None, num_threads: int | None = None, params: dict[str, Any] | None = None):
        self.device, self.num_threads, self.params = device, num_threads, dict(params or {})
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
        if self._engine is None:
            from rapidocr import RapidOCR

            self._engine = RapidOCR(params=self.rapidocr_params())
        return self._engine

    def spot(self, image: Image.Image | np.ndarray) -> str:
        """The text recognised in one RGB image, lines joined with spaces ("" when there is none)."""
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))  # rapidocr reads bare arrays as BGR; ours are RGB
        result = self.engine(image.convert("RGB"))
        return " ".join(result.txts) if getattr(result, "txts", None) else ""

    def __call__(self, images: Sequence[Image.Image | np.ndarray]) -> list[str]:
        """Spotted text of each image of a batch."""
        return [self.spot(image) for image in images]
