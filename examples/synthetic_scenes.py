"""A small image-text dataset that builds itself: rendered shapes in colours, with captions that describe them.

Used by `pretrain.py` when no dataset is given, so that the DiHT recipe runs offline, on CPU, in minutes, and its
zero-shot accuracy can be read against a known chance level. Like web data, the pool mixes good pairs with the
kinds the CAT filter (arXiv 2301.02280, §3.1) is meant to remove:

- `clean`: a compositional caption with an object, its attribute and an action ("a red circle rolls across the
  floor");
- `low_complexity`: a caption with no attribute attached to any object ("circle", "a picture");
- `no_action`: an object and attribute but no verb ("a red circle on a grey background");
- `text`: a clean caption, but the image shows the caption's words written on it (text spotting removes it).

The `kind` column records which, so a run can report what the filter removed against the truth. Every image also
carries its teacher concepts' ground truth in `label`: concepts are the colours and shapes (`CONCEPTS`).
"""

from __future__ import annotations

import math
import random

from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
          "purple": (140, 50, 170)}
SHAPES = ("circle", "square", "triangle", "star")
# Object and attribute concepts, the vocabulary of the demo's concept teacher (colours, then shapes).
CONCEPTS = (*COLORS, *SHAPES)
# Verbs a lexicon tagger reads as verbs too (the CAT fallback parser; "rolls" and "moves" read as nouns there).
ACTIONS = ("floats in the air", "rests on the ground", "spins slowly", "sits in a corner", "bounces on the table",
           "glides over the grey floor", "leans against the wall", "stands on the floor", "lies on the ground",
           "hangs in the air", "turns slowly")
CLEAN_TEMPLATES = ("a {color} {shape} {action}", "the {color} {shape} {action}", "a small {color} {shape} {action}",
                   "a bright {color} {shape} {action}")
NO_ACTION_TEMPLATES = ("a {color} {shape} on a grey background", "{color} {shape}", "a photo of a {color} {shape}")
LOW_COMPLEXITY_CAPTIONS = ("{shape}", "a picture", "image", "{shape} photo", "a thing", "untitled")
CLASS_PROMPT = "a photo of a {color} {shape}"
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
    x1, y1 = x0 + extent, y0 + extent
    fill = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLORS[color])
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:  # star: five points, inner radius 0.4 of the outer
        cx, cy, outer = (x0 + x1) / 2, (y0 + y1) / 2, extent / 2
        points = [(cx + r * math.sin(k * math.pi / 5), cy - r * math.cos(k * math.pi / 5))
                  for k, r in zip(range(10), [outer, 0.4 * outer] * 5)]
        draw.polygon(points, fill=fill)
    if text:
        words = text.split()[:3]
        font = ImageFont.load_default(size=max(8, size // (len(words) + 1)))
        for line, word in enumerate(words):
            draw.text((2, 2 + line * size / len(words)), word, fill=(255, 255, 255), font=font, stroke_width=1,
                      stroke_fill=(0, 0, 0))
    return image


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
        draw, kind = rng.random(), "clean"
        for name, share in shares.items():
            if draw < share:
                kind = name
                break
            draw -= share
        caption = _caption(kind, color, shape, rng)
        written = f"{color} {shape}" if kind == "text" else None
        rows["image"].append(render(color, shape, image_size, rng, text=written))
        rows["caption"].append(caption)
        rows["label"].append(label)
        rows["kind"].append(kind)
    features = Features({"image": Image(), "caption": Value("string"), "label": Value("int64"),
                         "kind": Value("string")})
    return Dataset.from_dict(rows, features=features)
