"""The demo's concept teacher: a small timm network trained to recognise the colours and shapes of the scenes.

DiHT's concept distillation (arXiv 2301.02280, §3.2) labels every training image offline with the concepts a
strong, frozen image model predicts. No such model can be downloaded here, so the demo trains a stand-in for a
few seconds on scenes of its own (not the pre-training pool) and then freezes it; `curation.label_concepts` treats
it as any timm teacher, preprocessing with the data config stored in its `pretrained_cfg`.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.data import create_transform, resolve_data_config
from torch import nn

from synthetic_scenes import CONCEPTS, build_scenes, concept_ids

# CLIP's normalisation, so teacher and student see the same pixel statistics.
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def train_demo_teacher(image_size: int, *, num_images: int = 1500, steps: int = 250, batch_size: int = 64,
                       seed: int = 0) -> nn.Module:
    """Train timm's `test_efficientnet` as a multi-label colour/shape classifier and return it frozen.

    Its `pretrained_cfg` records the input size, normalisation and `label_names` (the concept vocabulary
    `CONCEPTS`), which is what a teacher from the Hub carries.
    """
    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(CONCEPTS))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, image_size, image_size), "mean": MEAN,
                            "std": STD, "crop_pct": 1.0, "interpolation": "bicubic", "label_names": list(CONCEPTS)}
    transform = create_transform(**resolve_data_config({}, model=model))
    scenes = build_scenes(num_images, image_size=image_size, seed=seed + 1000)
    pixels = torch.stack([transform(image) for image in scenes["image"]])  # (N, 3, S, S)
    targets = torch.zeros(len(scenes), len(CONCEPTS))  # (N, K) multi-hot colour + shape
    for row, label in enumerate(scenes["label"]):
        targets[row, concept_ids(label)] = 1.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(len(scenes), (batch_size,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(model(pixels[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)
