"""DiHT's preprocessing: OpenAI CLIP's BPE tokenizer and DiHT's image processor, built offline.

DiHT (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280) keeps OpenAI CLIP's text pipeline (byte-level
BPE, 77 tokens, start/end tokens, padding with id 0) and image statistics (bicubic resize of the short side, centre
crop, OpenAI mean/std). Both are built here from files that ship with installed packages, so a converted or newly
trained checkpoint gets its tokenizer and image processor without a download.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from transformers import CLIPImageProcessorPil, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode  # OpenAI/GPT-2 byte-to-character map
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

__all__ = ["BPE_FILENAME", "CONTEXT_LENGTH", "build_image_processor", "build_tokenizer", "default_bpe_path"]

CONTEXT_LENGTH = 77  # OpenAI CLIP text context, used by every DiHT model
BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI's SimpleTokenizer keeps the first 49152 - 256 - 2 merges: the vocabulary is then 2 * 256 byte symbols
# (with and without "</w>") + 48894 merges + 2 special tokens = 49408 entries.
NUM_BPE_MERGES = 49152 - 256 - 2
SOT_TOKEN, EOT_TOKEN = "<|startoftext|>", "<|endoftext|>"  # ids 49406 and 49407, the last two of the vocabulary
# Token id 0 is "!" (the first printable byte); OpenAI's `clip.tokenize` and open_clip pad with id 0.
PAD_TOKEN = "!"


def default_bpe_path() -> Path:
    """The OpenAI CLIP BPE file inside the installed `open_clip_torch` package, located without importing it.

    Raises:
        FileNotFoundError: open_clip is not installed or its wheel lacks the file.
    """
    spec = importlib.util.find_spec("open_clip")  # finds the package on disk; runs none of its code
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / BPE_FILENAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Could not find {BPE_FILENAME}: install open_clip_torch (the file ships inside its wheel) or pass its path "
        "with bpe_path= (command line: --bpe_path)."
    )


def build_tokenizer(bpe_path: str | Path | None = None) -> CLIPTokenizer:
    """OpenAI CLIP's BPE tokenizer as a transformers `CLIPTokenizer`, built from the BPE merges file offline.

    Vocabulary and merges are built exactly as OpenAI's `SimpleTokenizer`: the 256 byte symbols, the same with
    `</w>`, the first 48894 merges, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407), 49408 entries.
    Sequences are wrapped in start/end tokens, truncated to 77 tokens and padded with id 0, as OpenAI's
    `clip.tokenize` and open_clip do. `split_special_tokens=True` keeps special-token strings typed in the text from
    being matched as special tokens; without it, every "!" in a caption would become the padding token.

    Known differences from OpenAI / open_clip (which first run `ftfy.fix_text` and `html.unescape` twice): text is
    only NFC-normalised, so curly quotes (’ “ ”), HTML entities (`&amp;`), ligatures (ﬁ), full-width forms (Ａ) and
    mojibake are tokenised as typed; clean such text with `ftfy` and `html.unescape` first for identical ids.
    Ordinary ASCII text gives identical ids.

    Args:
        bpe_path: `bpe_simple_vocab_16e6.txt.gz`; defaults to the copy inside the installed open_clip package.

    Returns:
        The tokenizer, with `model_max_length=77` and `pad_token_id == 0`.
    """
    path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
    if not path.is_file():
        raise FileNotFoundError(f"BPE file {str(path)!r} does not exist")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_BPE_MERGES + 1]]  # line 0 is a version header
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    tokens += [SOT_TOKEN, EOT_TOKEN]
    return CLIPTokenizer(
        vocab={token: index for index, token in enumerate(tokens)},
        merges=merges,
        bos_token=SOT_TOKEN,
        eos_token=EOT_TOKEN,
        unk_token=EOT_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=CONTEXT_LENGTH,
        split_special_tokens=True,
    )


def build_image_processor(image_size: int) -> CLIPImageProcessorPil:
    """DiHT's evaluation preprocessing: bicubic resize of the short side, centre crop, OpenAI mean/std.

    The PIL-backed class is used: it runs without torchvision and gives the same pixels as open_clip's and DiHT's
    torchvision transforms on PIL images. The saved `preprocessor_config.json` names `CLIPImageProcessor`, so
    `AutoImageProcessor.from_pretrained` picks the torchvision backend where torchvision is installed (resizing
    with torch: values differ by up to ~0.03 after normalisation); pass `backend="pil"` to reproduce the original
    preprocessing exactly. Images with transparency are composited onto white (the original drops the alpha channel).

    Args:
        image_size: the model's input resolution (224 or 336 for the released models).

    Returns:
        The image processor.
    """
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(OPENAI_CLIP_MEAN),  # DiHT trains and evaluates with OpenAI's statistics
        image_std=list(OPENAI_CLIP_STD),
        do_convert_rgb=True,
    )
