"""One model-card entry per model type: what a card of that recipe says, cites and uploads.

`render_model_card` and `push_to_hub` are generic; everything that differs between DiHT (arXiv 2301.02280) and
COSMO (arXiv 2312.06112) checkpoints is a `CardRecipe` in `RECIPES`, keyed by `config.json`'s `model_type`:
the template, the architectures it describes, the pipeline tag and tags, the BibTeX it cites, the remote-code files
and `auto_map` (read from the model package itself, their one source), the labels of the recipe's training settings
(the loss's own `get_config_dict()` keys), and a function for the template's model-specific details.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CardRecipe", "LIBRARY_CITATION", "RECIPES", "recipe_for"]

# The library that trained or converted the checkpoint; every card cites it next to its recipe's papers.
LIBRARY_CITATION = """@software{diht_cosmo,
  title  = {{diht-cosmo}: {DiHT} and {COSMO} vision-language pre-training for the {Hugging Face} ecosystem},
  year   = {2026},
  note   = {Apache-2.0}
}"""


@dataclass(frozen=True)
class CardRecipe:
    """What the card and the upload of one model type need.

    Attributes:
        model_type: `config.json`'s `model_type`.
        template: the Jinja template's file name in `hub_cards/templates/`.
        architectures: the model classes (`config.json`'s `architectures`) the template describes.
        package: the importable package holding the remote code.
        remote_code: `() -> (files, auto_map)`, read from the package (its one source).
        pipeline_tag: the Hub pipeline tag of the card's metadata.
        tags: the card's base tags.
        citations: BibTeX entries of the recipe's papers, cited before the library's.
        training_labels: the recipe's training settings (training-argument and loss-config keys) → card labels, in
            the order the card lists them.
        details: `(config dict, folder or None, training settings) -> template variables` of the model.
        tags_for: `(template variables) -> extra tags` (e.g. `concept-distillation` when it was used).
        license_for: `(folder or None) -> license id or None`: the license a checkpoint must carry when the caller
            names none (converted official weights keep their release license).
        language: the card's language metadata.
    """

    model_type: str
    template: str
    architectures: frozenset[str]
    package: str
    remote_code: Callable[[], tuple[tuple[str, ...], Mapping[str, str]]]
    pipeline_tag: str
    tags: tuple[str, ...]
    citations: tuple[str, ...]
    training_labels: Mapping[str, str] = field(default_factory=dict)
    details: Callable[[Mapping[str, Any], Any, Mapping[str, Any]], dict[str, Any]] = lambda config, folder, s: {}
    tags_for: Callable[[Mapping[str, Any]], list[str]] = lambda context: []
    license_for: Callable[[Any], str | None] = lambda folder: None
    language: str = "en"


def _recipes() -> dict[str, CardRecipe]:
    from .cosmo import COSMO_CARD
    from .diht import DIHT_CARD

    return {recipe.model_type: recipe for recipe in (DIHT_CARD, COSMO_CARD)}


RECIPES: dict[str, CardRecipe] = _recipes()


def recipe_for(model_type: str | None, architectures: list[str] | None = None) -> CardRecipe:
    """The card recipe of a model type (and of the saved architectures, when the config names them).

    Raises:
        ValueError: no recipe exists for the type, or its template does not describe the architecture; the message
            names what exists.
    """
    if model_type not in RECIPES:
        raise ValueError(
            f"No model card recipe for model type {model_type!r}; recipes exist for {sorted(RECIPES)}. Add a "
            "hub_cards.recipes.CardRecipe with its template and register it in hub_cards.recipes.RECIPES."
        )
    recipe = RECIPES[model_type]
    if architectures and not recipe.architectures.intersection(architectures):
        raise ValueError(f"The {model_type!r} card template describes {sorted(recipe.architectures)}, not "
                         f"{architectures}; there is no card template for that architecture yet.")
    return recipe
