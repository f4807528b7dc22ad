"""Prompt templates of the zero-shot protocols DiHT reports (arXiv 2301.02280, after CLIP, arXiv 2103.00020).

ImageNet zero-shot classification uses OpenAI CLIP's 80 prompt templates (Radford et al., "Learning Transferable
Visual Models From Natural Language Supervision", ICML 2021, https://arxiv.org/abs/2103.00020, and its prompt
engineering notebook); DiHT (https://arxiv.org/abs/2301.02280) evaluates with the same set. Image-text retrieval
wraps every caption as "a photo of {}." (the DiHT protocol).
"""

from __future__ import annotations

# The 80 templates of OpenAI's ImageNet prompt ensemble, in OpenAI's order. `{}` is replaced by the class name.
OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# A single template, for data whose class names are already phrases, and for quick checks.
SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

# DiHT's retrieval protocol wraps every caption in this template (the official evaluation of arXiv 2301.02280).
DIHT_CAPTION_TEMPLATE = "a photo of {}."

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "openai_imagenet": OPENAI_IMAGENET_TEMPLATES,
    "simple": SIMPLE_TEMPLATES,
    "none": ("{}",),  # the class names are the prompts
}


def resolve_templates(templates: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A template set by name (`"openai_imagenet"`, `"simple"`, `"none"`), a file with one template per line, or a
    list of templates; every template must contain `{}` exactly once."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        from pathlib import Path

        path = Path(templates)
        if not path.is_file():
            raise ValueError(f"unknown template set {templates!r}: use one of {sorted(TEMPLATE_SETS)} or a file with "
                             "one template per line")
        templates = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    templates = tuple(templates)
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(f"every prompt template needs exactly one '{{}}' for the class name; got {bad or 'none'}")
    return templates
