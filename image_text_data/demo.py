"""The built-in demo: an image-text dataset that builds itself, a concept teacher, a tokenizer and a checkpoint.

Rendered shapes in colours with captions that describe them, so that a recipe runs offline, on CPU, in minutes, and
its zero-shot accuracy can be read against a known chance level. The commands in `examples/` use it when no data
is given. Like web data, the pool mixes good pairs with the kinds the CAT filter (DiHT, arXiv 2301.02280, §3.1) is
meant to remove:

- `clean`: a compositional caption with an object, its attribute and an action ("a red circle rolls across the
  floor");
- `low_complexity`: a caption with no attribute attached to any object ("circle", "a picture");
- `no_action`: an object and attribute but no verb ("a red circle on a grey background");
- `text`: a clean caption, but the image shows the caption's words written on it (text spotting removes it).

The `kind` column records which, so a run can report what the filter removed against the truth. Every image also
carries its teacher concepts' ground truth in `label`: concepts are the colours and shapes (`CONCEPTS`).

Also here: `train_demo_teacher` (a small frozen concept teacher for DiHT's concept distillation, arXiv 2301.02280
§3.2, trained in seconds because none can be downloaded), `build_word_tokenizer` (a word-level tokenizer over the
demo captions) and `ensure_demo_checkpoint` (the demo's pretraining run, when its checkpoint is missing).
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import torch
from datasets import Dataset, Features, Image, Sequence, Value
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from torch import nn
from transformers import PreTrainedTokenizerFast

__all__ = ["CLASS_PROMPT", "CLASS_TEMPLATE", "CONCEPTS", "DEMO_CHECKPOINT", "KINDS", "build_grouped_scenes",
           "build_scenes", "build_wordpiece_tokenizer", "build_word_tokenizer", "class_names", "concept_ids",
           "ensure_demo_checkpoint", "render", "train_demo_teacher"]
# Two-object scenes with relations (the ablation benchmark's data, issue 14).
__all__ += ["RELATION_TEMPLATES", "TWIN_KINDS", "build_relation_scenes", "relation_caption", "relation_class_names",
            "relation_match_table", "relation_objects", "relation_twins", "render_relation", "train_relation_teacher"]

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
          "purple": (140, 50, 170)}
SHAPES = ("circle", "square", "triangle", "star")
# Object and attribute concepts, the vocabulary of the demo's concept teacher (colours, then shapes).
CONCEPTS = (*COLORS, *SHAPES)
# Actions of the clean captions: ones that both CAT parsers (spaCy's en_core_web_sm and the offline fallback) read
# as a verb with a subject in every template (spaCy's small model reads some bare verbs, "glides", "floats", as
# nouns; benchmarks/bench_caption_parsers.py measures the two parsers' agreement on captions beyond these).
ACTIONS = ("sits in a corner", "stands on the floor", "hangs in the air", "turns slowly", "falls off the table",
           "rises into the air", "shines in the sun", "jumps over a box", "is rolling across the floor",
           "is moving to the left", "is spinning slowly", "is falling off a shelf", "is bouncing on the floor",
           "is floating in the air", "rolling across the floor", "moving to the left")
CLEAN_TEMPLATES = ("a {color} {shape} {action}", "the {color} {shape} {action}", "a small {color} {shape} {action}",
                   "a bright {color} {shape} {action}")
NO_ACTION_TEMPLATES = ("a {color} {shape} on a grey background", "{color} {shape}", "a photo of a {color} {shape}")
LOW_COMPLEXITY_CAPTIONS = ("{shape}", "a picture", "image", "{shape} photo", "a thing", "untitled")
CLASS_PROMPT = "a photo of a {color} {shape}"
CLASS_TEMPLATE = CLASS_PROMPT.replace("{color} {shape}", "{}")  # "a photo of a {}", for a class name "red circle"
KINDS = ("clean", "low_complexity", "no_action", "text")


def class_names() -> list[str]:
    """The zero-shot classes: every colour-shape combination, in a fixed order."""
    return [f"{color} {shape}" for color in COLORS for shape in SHAPES]


def concept_ids(label: int) -> list[int]:
    """The true concepts of a class: its colour and its shape, as indices into `CONCEPTS`."""
    color, shape = class_names()[label].split()
    return [CONCEPTS.index(color), CONCEPTS.index(shape)]


def render(color: str, shape: str, size: int, rng: random.Random, text: str | None = None) -> PILImage.Image:
    """Draw one shape of one colour at a random place and scale on a noisy grey background; optionally write
    `text` over it in large white letters, one word per line."""
    background = tuple(rng.randint(90, 160) for _ in range(3))
    image = PILImage.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    extent = rng.uniform(0.45, 0.8) * size
    x0, y0 = rng.uniform(0, size - extent), rng.uniform(0, size - extent)
    fill = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLORS[color])
    _draw_shape(draw, shape, (x0, y0, x0 + extent, y0 + extent), fill)
    if text:
        _write_words(draw, text, size)
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:  # star: five points, inner radius 0.4 of the outer
        cx, cy, outer = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        points = [(cx + r * math.sin(k * math.pi / 5), cy - r * math.cos(k * math.pi / 5))
                  for k, r in zip(range(10), [outer, 0.4 * outer] * 5)]
        draw.polygon(points, fill=fill)


def _write_words(draw: ImageDraw.ImageDraw, text: str, size: int) -> None:
    """Up to three words of `text` in large white letters, one per line (the scenes CAT's text rule removes)."""
    words = text.split()[:3]
    font = ImageFont.load_default(size=max(8, size // (len(words) + 1)))
    for line, word in enumerate(words):
        draw.text((2, 2 + line * size / len(words)), word, fill=(255, 255, 255), font=font, stroke_width=1,
                  stroke_fill=(0, 0, 0))


def _draw_kind(rng: random.Random, shares: dict[str, float]) -> str:
    """One of `shares`' kinds with its probability, else "clean" (one draw of `rng`)."""
    draw = rng.random()
    for name, share in shares.items():
        if draw < share:
            return name
        draw -= share
    return "clean"


def _caption(kind: str, color: str, shape: str, rng: random.Random) -> str:
    if kind == "low_complexity":
        return rng.choice(LOW_COMPLEXITY_CAPTIONS).format(shape=shape)
    if kind == "no_action":
        return rng.choice(NO_ACTION_TEMPLATES).format(color=color, shape=shape)
    return rng.choice(CLEAN_TEMPLATES).format(color=color, shape=shape, action=rng.choice(ACTIONS))


def build_scenes(
    num_samples: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    low_complexity_share: float = 0.0,
    no_action_share: float = 0.0,
    text_share: float = 0.0,
) -> Dataset:
    """Build `num_samples` image-caption pairs; by default all clean.

    Args:
        num_samples: number of rows.
        image_size: side of the square images in pixels.
        seed: the dataset is a pure function of its arguments.
        low_complexity_share, no_action_share, text_share: expected shares of rows of each noisy kind.

    Returns:
        A `datasets.Dataset` with columns `image` (PIL), `caption` (str), `label` (int, index into
        `class_names()`) and `kind` (one of `KINDS`).
    """
    rng = random.Random(seed)
    names = class_names()
    shares = {"low_complexity": low_complexity_share, "no_action": no_action_share, "text": text_share}
    rows = {"image": [], "caption": [], "label": [], "kind": []}
    for _ in range(num_samples):
        label = rng.randrange(len(names))
        color, shape = names[label].split()
        kind = _draw_kind(rng, shares)
        caption = _caption(kind, color, shape, rng)
        written = f"{color} {shape}" if kind == "text" else None
        rows["image"].append(render(color, shape, image_size, rng, text=written))
        rows["caption"].append(caption)
        rows["label"].append(label)
        rows["kind"].append(kind)
    features = Features({"image": Image(), "caption": Value("string"), "label": Value("int64"),
                         "kind": Value("string")})
    return Dataset.from_dict(rows, features=features)


# ---- scenes with planted false negatives (COSMO's demo) ---------------------------------------------------------------

def build_grouped_scenes(num_images: int, *, captions_per_image: int = 2, image_size: int = 32, seed: int = 0,
                         classes: list[int] | None = None) -> Dataset:
    """Scenes with several clean captions each, for training with multi-caption images and known false negatives.

    Every image gets `captions_per_image` different clean captions (different templates and actions), one row per
    caption, the rows of one image sharing its `image_id`. A caption names the scene's colour and shape only, so it
    describes every scene of that class equally well: two rows of different images of the same class are a false
    negative pair, the planted ground truth of COSMO's connection mining (arXiv 2312.06112). The match table is
    many-to-many and is the `label` column: a caption matches an image iff their labels are equal.

    Args:
        num_images: distinct images.
        captions_per_image: rows per image (at most the number of distinct clean captions of a class).
        image_size: side of the images in pixels.
        seed: the dataset is a pure function of its arguments.
        classes: the class of each image, cycled (default: drawn at random).

    Returns:
        A `Dataset` with `image`, `caption`, `image_id`, `label` (index into `class_names()`).
    """
    rng = random.Random(seed)
    names = class_names()
    rows = {"image": [], "caption": [], "image_id": [], "label": []}
    for image_id in range(num_images):
        label = classes[image_id % len(classes)] if classes else rng.randrange(len(names))
        color, shape = names[label].split()
        image = render(color, shape, image_size, rng)
        captions: list[str] = []
        while len(captions) < captions_per_image:
            caption = _caption("clean", color, shape, rng)
            if caption not in captions:
                captions.append(caption)
        for caption in captions:
            rows["image"].append(image)
            rows["caption"].append(caption)
            rows["image_id"].append(image_id)
            rows["label"].append(label)
    features = Features({"image": Image(), "caption": Value("string"), "image_id": Value("int64"),
                         "label": Value("int64")})
    return Dataset.from_dict(rows, features=features)


# ---- the concept teacher -------------------------------------------------------------------------------------------

# CLIP's normalisation, so teacher and student see the same pixel statistics.
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def train_demo_teacher(image_size: int, *, num_images: int = 1500, steps: int = 250, batch_size: int = 64,
                       seed: int = 0) -> nn.Module:
    """Train timm's `test_efficientnet` as a multi-label colour/shape classifier and return it frozen.

    DiHT's concept distillation (arXiv 2301.02280, §3.2) labels every training image offline with the concepts a
    strong, frozen image model predicts. No such model can be downloaded here, so the demo trains a stand-in on
    scenes of its own (not the pre-training pool); its `pretrained_cfg` records the input size, normalisation and
    `label_names` (the concept vocabulary `CONCEPTS`), which is what a teacher from the Hub carries, so
    `curation.label_concepts` treats it as any timm teacher.
    """
    scenes = build_scenes(num_images, image_size=image_size, seed=seed + 1000)
    return _train_concept_teacher(scenes["image"], [concept_ids(label) for label in scenes["label"]], image_size,
                                  steps=steps, batch_size=batch_size, seed=seed)


def _train_concept_teacher(images, concepts: list[list[int]], image_size: int, *, steps: int, batch_size: int,
                           seed: int) -> nn.Module:
    """timm's `test_efficientnet` fitted to multi-hot `concepts` (over `CONCEPTS`) of `images`, returned frozen."""
    import timm
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(CONCEPTS))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, image_size, image_size), "mean": _CLIP_MEAN,
                            "std": _CLIP_STD, "crop_pct": 1.0, "interpolation": "bicubic",
                            "label_names": list(CONCEPTS)}
    transform = create_transform(**resolve_data_config({}, model=model))
    pixels = torch.stack([transform(image) for image in images])  # (N, 3, S, S)
    targets = torch.zeros(len(concepts), len(CONCEPTS))  # (N, K) multi-hot colours + shapes
    for row, ids in enumerate(concepts):
        targets[row, ids] = 1.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(len(concepts), (batch_size,), generator=generator)
        loss = nn.functional.binary_cross_entropy_with_logits(model(pixels[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


# ---- the tokenizer ---------------------------------------------------------------------------------------------------

SOT, EOT, PAD, UNK = "<|startoftext|>", "<|endoftext|>", "<pad>", "<unk>"


def build_word_tokenizer(texts: list[str], max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `texts`, with CLIP's start/end tokens and padding id 0, built offline.

    Example:
        >>> tokenizer = build_word_tokenizer(["a red circle", "a blue square"])
        >>> tokenizer("a red square")["input_ids"]  # <|startoftext|> a red square <|endoftext|>
        [2, 4, 7, 8, 3]
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = sorted({word for text in texts for word in text.lower().split()})
    vocab = {token: i for i, token in enumerate([PAD, UNK, SOT, EOT, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=SOT, eos_token=EOT, pad_token=PAD, unk_token=UNK,
        model_max_length=max_length, do_lower_case=True,
    )


def build_wordpiece_tokenizer(texts: list[str], max_length: int = 25):
    """A BERT WordPiece tokenizer over the words of `texts` (whole words, lower-cased), built offline.

    `[CLS] words [SEP]`, padding `[PAD]` = 0, `[MASK]` for MLM: the layout of the BERT tokenizer COSMO uses, small
    enough for the demo. `max_length` is COSMO's pre-training caption length (25 tokens).

    Example:
        >>> tokenizer = build_wordpiece_tokenizer(["a red circle", "a blue square"])
        >>> tokenizer.convert_ids_to_tokens(tokenizer("a red square")["input_ids"])
        ['[CLS]', 'a', 'red', 'square', '[SEP]']
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({word for text in texts for word in text.lower().split()})
    vocab = {token: i for i, token in enumerate([*special, *words])}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]", model_max_length=max_length)


# ---- the demo checkpoint ---------------------------------------------------------------------------------------------

DEMO_CHECKPOINT = "outputs/pretrain/model"  # where `examples/pretrain.py` with no arguments leaves its model


def ensure_demo_checkpoint(path: str, pretrain_script: str | Path) -> None:
    """Run the pretraining demo when `path` is its default checkpoint and is missing.

    The no-argument path of the commands that start from a trained model (`examples/zero_shot.py`,
    `examples/few_shot.py`): they pass their sibling `pretrain.py`, which runs in a child process with its own
    arguments. A path the user gave is never trained.

    Raises:
        FileNotFoundError: the checkpoint is missing and the script does not exist.
        RuntimeError: the demo run failed.
    """
    if path != DEMO_CHECKPOINT or Path(path).exists():
        return
    script = Path(pretrain_script)
    if not script.is_file():
        raise FileNotFoundError(f"{path} not found, and no pretraining script at {script} to make it; run "
                                "examples/pretrain.py first")
    print(f"{path} not found: running the pretraining demo first ({script}, a few minutes on CPU)")
    done = subprocess.run([sys.executable, str(script), "--output_dir", str(Path(path).parent)])
    if done.returncode != 0:
        raise RuntimeError(f"the pretraining demo ({script}) failed with exit code {done.returncode}")


# ---- two-object scenes with relations: planted hard negatives, false negatives and CAT noise (issue 14) -----------------

# A smaller palette than the single-object scenes: with 3 colours x 3 shapes = 9 objects there are 72 ordered pairs,
# so a random batch of 64 holds several of every caption's one-change twins (the hard negatives HN-NCE and GRIT are
# about) and a few scenes of its own class (the false negatives ECM is about).
RELATION_COLORS = ("red", "green", "blue")
RELATION_SHAPES = ("circle", "square", "triangle")
# Verbs that both CAT parsers read as an action with a subject in these templates.
RELATION_VERBS = ("sits", "stands", "rests", "lies")
# {a} is the object on the left, {b} the one on the right: both templates are true of the same scene.
RELATION_TEMPLATES = ("a {a} {verb} to the left of a {b}", "a {b} {verb} to the right of a {a}")
RELATION_CLASS = "{a} to the left of a {b}"  # a zero-shot class name, for CLASS_TEMPLATE ("a photo of a {}")
# CAT noise of these scenes: captions without an action also lack the relation (web alt-text style), and low-complexity
# captions name at most one shape.
RELATION_NO_ACTION_TEMPLATES = ("a {a} and a {b}", "{a}, {b}", "a photo of a {a} and a {b}")
TWIN_KINDS = ("attribute", "object", "relation")


def relation_objects(colors: tuple[str, ...] = RELATION_COLORS,
                     shapes: tuple[str, ...] = RELATION_SHAPES) -> list[str]:
    """The objects of the two-object scenes ("red circle", ...), in a fixed order."""
    return [f"{color} {shape}" for color in colors for shape in shapes]


def relation_class_names(colors: tuple[str, ...] = RELATION_COLORS,
                         shapes: tuple[str, ...] = RELATION_SHAPES) -> list[str]:
    """The classes of the two-object scenes: every ordered pair of distinct objects, left one first, as a name
    for `CLASS_TEMPLATE` ("red circle to the left of a blue square"). A class index is a scene's `label`."""
    objects = relation_objects(colors, shapes)
    return [RELATION_CLASS.format(a=a, b=b) for a in objects for b in objects if a != b]


def _relation_pair(label: int, objects: list[str]) -> tuple[str, str]:
    """The (left, right) objects of class `label` (the order of `relation_class_names`)."""
    n = len(objects)
    left, rest = divmod(label, n - 1)
    right = rest + (rest >= left)
    return objects[left], objects[right]


def _relation_label(left: str, right: str, objects: list[str]) -> int:
    i, j = objects.index(left), objects.index(right)
    return i * (len(objects) - 1) + j - (j > i)


def relation_caption(left: str, right: str, template: int, verb: str) -> str:
    """A true caption of a scene with `left` to the left of `right`, in template `template` of
    `RELATION_TEMPLATES`."""
    return RELATION_TEMPLATES[template].format(a=left, b=right, verb=verb)


def relation_twins(left: str, right: str, template: int, verb: str, rng: random.Random,
                   colors: tuple[str, ...] = RELATION_COLORS,
                   shapes: tuple[str, ...] = RELATION_SHAPES) -> dict[str, tuple[str, int]]:
    """The one-change twins of a true caption: hard negatives that differ from it in exactly one word's meaning.

    - `attribute`: one object's colour changed ("a red circle ..." -> "a green circle ...");
    - `object`: one object's shape changed;
    - `relation`: the relation reversed ("to the left of" <-> "to the right of", the same words otherwise).

    Each twin describes another class (never the scene's own: a change that would make the two objects equal is not
    drawn). Twins keep the template and the verb, so only the changed word tells them apart (DiHT's hard negatives,
    arXiv 2301.02280 §3.3; GRIT-VLP's hard-negative ITM, arXiv 2208.04060).

    Returns:
        `{kind: (caption, label of the scene the twin describes)}` for every kind of `TWIN_KINDS`.
    """
    objects = relation_objects(colors, shapes)
    twins = {}
    for kind in ("attribute", "object"):
        options = []
        for side in (0, 1):
            color, shape = (left, right)[side].split()
            for value in (colors if kind == "attribute" else shapes):
                if value in (color, shape):
                    continue
                changed = f"{value} {shape}" if kind == "attribute" else f"{color} {value}"
                pair = (changed, right) if side == 0 else (left, changed)
                if pair[0] != pair[1]:
                    options.append(pair)
        a, b = rng.choice(options)
        twins[kind] = (relation_caption(a, b, template, verb), _relation_label(a, b, objects))
    # Reversing the relation while keeping the words in place describes the mirrored scene.
    twins["relation"] = (RELATION_TEMPLATES[template].format(a=right, b=left, verb=verb),
                         _relation_label(right, left, objects))
    return twins


def render_relation(left: str, right: str, size: int, rng: random.Random, text: str | None = None) -> PILImage.Image:
    """Draw two objects side by side, `left` in the left half and `right` in the right half, each at a random
    height and scale on a noisy grey background; optionally write `text` over them (one word per line)."""
    background = tuple(rng.randint(90, 160) for _ in range(3))
    image = PILImage.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    half = size / 2
    for offset, name in ((0.0, left), (half, right)):
        color, shape = name.split()
        extent = rng.uniform(0.6, 0.9) * half
        x0, y0 = offset + rng.uniform(0, half - extent), rng.uniform(0, size - extent)
        fill = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLORS[color])
        _draw_shape(draw, shape, (x0, y0, x0 + extent, y0 + extent), fill)
    if text:
        _write_words(draw, text, size)
    return image


def build_relation_scenes(
    num_images: int,
    *,
    captions_per_image: int = 1,
    image_size: int = 64,
    seed: int = 0,
    low_complexity_share: float = 0.0,
    no_action_share: float = 0.0,
    text_share: float = 0.0,
    with_twins: bool = False,
    classes: list[int] | None = None,
    colors: tuple[str, ...] = RELATION_COLORS,
    shapes: tuple[str, ...] = RELATION_SHAPES,
) -> Dataset:
    """Two-object scenes whose captions carry a relation, with the structure an ablation needs planted and known.

    Every image shows two distinct objects (colour and shape) side by side; its class (`label`, an index into
    `relation_class_names`) is the ordered pair (left, right). Planted structure:

    - **hard negatives** (`with_twins=True`): each row's caption comes with its one-attribute, one-object and
      one-relation twins (`relation_twins`), each describing another class, so "true caption vs its twin" can be
      scored;
    - **false negatives**: `captions_per_image` different true captions per image (rows sharing `image_id`; the two
      templates say the same relation from either side), and every caption describes every image of its class
      equally well: the many-to-many match table is `label` equality (`relation_match_table`);
    - **CAT-removable noise** (DiHT, arXiv 2301.02280 §3.1; the shares are expected fractions of images):
      `low_complexity` captions (no attribute: "circle", "a picture"), `no_action` captions (objects without verb or
      relation: "a red circle and a blue square"), and `text` images with the caption's words written on them;
      `kind` says which (`KINDS`);
    - **concepts a teacher can predict**: `concept_ids`, the colours and shapes in the image (indices into
      `CONCEPTS`), for `train_relation_teacher`.

    Args:
        num_images: distinct images.
        captions_per_image: rows per image (at most the number of verbs, 4).
        image_size: side of the images in pixels.
        seed: the dataset is a pure function of its arguments.
        low_complexity_share, no_action_share, text_share: shares of images of each noisy kind (their rows all get
            that kind; a noisy caption is drawn for every row).
        with_twins: add `twin_captions` (one per `TWIN_KINDS`, in that order) and `twin_labels`.
        classes: the class of each image, cycled (default: drawn at random); `list(range(72))` balances them.
        colors, shapes: the palette (default 3 x 3).

    Returns:
        A `Dataset` with `image`, `caption`, `image_id`, `label`, `kind`, `concept_ids` (and the twin columns).
    """
    rng, twin_rng = random.Random(seed), random.Random(seed + 7919)  # twins do not change the scenes drawn
    objects = relation_objects(colors, shapes)
    num_classes = len(objects) * (len(objects) - 1)
    if not 1 <= captions_per_image <= len(RELATION_VERBS):
        raise ValueError(f"captions_per_image must be in [1, {len(RELATION_VERBS)}], got {captions_per_image}")
    shares = {"low_complexity": low_complexity_share, "no_action": no_action_share, "text": text_share}
    columns = ["image", "caption", "image_id", "label", "kind", "concept_ids"]
    if with_twins:
        columns += ["twin_captions", "twin_labels"]
    rows: dict[str, list] = {name: [] for name in columns}
    for image_id in range(num_images):
        label = classes[image_id % len(classes)] if classes else rng.randrange(num_classes)
        left, right = _relation_pair(label, objects)
        kind = _draw_kind(rng, shares)
        # Templates alternate, so that two captions of an image say the relation from either side; verbs differ.
        first, verbs = rng.randrange(len(RELATION_TEMPLATES)), rng.sample(RELATION_VERBS, captions_per_image)
        forms = [((first + i) % len(RELATION_TEMPLATES), verb) for i, verb in enumerate(verbs)]
        written = f"{left} {right.split()[0]}" if kind == "text" else None
        image = render_relation(left, right, image_size, rng, text=written)
        concepts = sorted({CONCEPTS.index(word) for word in (*left.split(), *right.split())})
        for template, verb in forms:
            if kind == "low_complexity":
                caption = rng.choice(LOW_COMPLEXITY_CAPTIONS).format(shape=rng.choice((left, right)).split()[1])
            elif kind == "no_action":
                caption = rng.choice(RELATION_NO_ACTION_TEMPLATES).format(a=left, b=right)
            else:
                caption = relation_caption(left, right, template, verb)
            rows["image"].append(image)
            rows["caption"].append(caption)
            rows["image_id"].append(image_id)
            rows["label"].append(label)
            rows["kind"].append(kind)
            rows["concept_ids"].append(concepts)
            if with_twins:
                twins = relation_twins(left, right, template, verb, twin_rng, colors, shapes)
                rows["twin_captions"].append([twins[k][0] for k in TWIN_KINDS])
                rows["twin_labels"].append([twins[k][1] for k in TWIN_KINDS])
    features = {"image": Image(), "caption": Value("string"), "image_id": Value("int64"), "label": Value("int64"),
                "kind": Value("string"), "concept_ids": Sequence(Value("int64"))}
    if with_twins:
        features.update(twin_captions=Sequence(Value("string")), twin_labels=Sequence(Value("int64")))
    return Dataset.from_dict(rows, features=Features(features))


def relation_match_table(image_labels, text_labels) -> torch.Tensor:
    """The ground-truth many-to-many match table of two-object scenes: `(N_img, N_txt)` bools, True where the
    caption describes the image (their classes are equal), whichever image the caption was written for."""
    images = torch.as_tensor(list(image_labels)).view(-1, 1)
    texts = torch.as_tensor(list(text_labels)).view(1, -1)
    return images == texts


def train_relation_teacher(image_size: int, *, num_images: int = 1500, steps: int = 300, batch_size: int = 64,
                           seed: int = 0) -> nn.Module:
    """A frozen multi-label concept teacher for the two-object scenes: timm's `test_efficientnet` trained to predict
    the colours and shapes present (`concept_ids`, vocabulary `CONCEPTS`), on scenes of its own.

    The stand-in for DiHT's strong frozen teacher (arXiv 2301.02280 §3.2), as `train_demo_teacher` is for the
    single-object scenes; `curation.label_concepts(..., activation="sigmoid")` labels with it as with any timm model.
    """
    scenes = build_relation_scenes(num_images, image_size=2 * image_size, seed=seed + 1000)
    return _train_concept_teacher(scenes["image"], scenes["concept_ids"], image_size, steps=steps,
                                  batch_size=batch_size, seed=seed)
