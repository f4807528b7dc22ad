"""A small image-text dataset that builds itself: rendered shapes in colours, with captions that describe them.

Used by `pretrain.py` when no dataset is given, so that the recipe runs offline, on CPU, in minutes, and its
zero-shot accuracy can be read against a known chance level.
"""

from __future__ import annotations

import random

from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
          "purple": (140, 50, 170)}
SHAPES = ("circle", "square", "triangle", "cross")
CAPTION_TEMPLATES = ("a {color} {shape}", "a photo of a {color} {shape}", "a {shape} that is {color}",
                     "a {color} {shape} on a grey background")
CLASS_PROMPT = "a photo of a {color} {shape}"


def class_names() -> list[str]:
    """The zero-shot classes: every colour-shape combination, in a fixed order."""
    return [f"{color} {shape}" for color in COLORS for shape in SHAPES]


def render(color: str, shape: str, size: int, rng: random.Random) -> PILImage.Image:
    """Draw one shape of one colour at a random place and scale on a noisy grey background."""
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
    else:  # cross: two bars of a third of the extent
        bar = extent / 3
        draw.rectangle((x0 + bar, y0, x1 - bar, y1), fill=fill)
        draw.rectangle((x0, y0 + bar, x1, y1 - bar), fill=fill)
    return image


def build_scenes(num_samples: int, *, image_size: int = 32, seed: int = 0) -> Dataset:
    """Build `num_samples` image-caption pairs with a `label` column (index into `class_names()`).

    Args:
        num_samples: number of rows.
        image_size: side of the square images in pixels.
        seed: the dataset is a pure function of the seed.

    Returns:
        A `datasets.Dataset` with columns `image` (PIL), `caption` (str) and `label` (int).
    """
    rng = random.Random(seed)
    names = class_names()
    rows = {"image": [], "caption": [], "label": []}
    for _ in range(num_samples):
        label = rng.randrange(len(names))
        color, shape = names[label].split()
        rows["image"].append(render(color, shape, image_size, rng))
        rows["caption"].append(rng.choice(CAPTION_TEMPLATES).format(color=color, shape=shape))
        rows["label"].append(label)
    features = Features({"image": Image(), "caption": Value("string"), "label": Value("int64")})
    return Dataset.from_dict(rows, features=features)
