"""DiHT's few-shot protocol: prompt-initialised head, projected gradient descent, and a (δ, δ_b) grid search.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280 (few-shot linear probing with prompt initialisation):

    min_{‖W‖ ≤ δ, ‖b‖ ≤ δ_b}  Σ_i CE(y_i, x_iᵀ (W + W₀) + b)

W₀ is the zero-shot classifier built from the class prompts, W and b are learned by projected gradient descent, and
δ, δ_b are chosen by grid search on held-out shots. The grid always contains δ = δ_b = 0 (zero-shot itself), so the
chosen model is never worse than zero-shot on those shots. The model is `modeling_diht.DiHTForImageClassification`;
this module has the protocol around it: shot sampling, the projection callback, the grid search, LoRA.
"""

from __future__ import annotations

import copy
import logging
import random
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from accelerate.utils import extract_model_from_parallel
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from image_text_data.images import UndecodableImageError, load_image

logger = logging.getLogger(__name__)

__all__ = ["DeltaBallProjectionCallback", "FewShotCandidate", "FewShotResult", "LORA_TARGET_MODULES", "LoraSettings",
           "few_shot_learning_rate", "few_shot_search", "merge_lora", "sample_shots", "with_lora"]

# LoRA on the image tower's attention only: the query and value projections, as in LoRA's own recipe (Hu et al.,
# arXiv 2106.09685). A regular expression, so that no text-tower module could ever match.
LORA_TARGET_MODULES = r"vision_model\..*\.self_attn\.(q_proj|v_proj)"


class DeltaBallProjectionCallback(TrainerCallback):
    """Projected gradient descent for DiHT's prompt-initialised few-shot head (arXiv 2301.02280, few-shot probing).

    After every optimizer step (not after each gradient-accumulation micro-step) it calls the model's
    `project_residuals_()`, which rescales the residual W onto the δ-ball and b onto the δ_b-ball. The model is
    unwrapped first (DDP, `torch.compile`); a `peft` model with LoRA adapters and `modules_to_save` forwards the call
    to its base model. Use it with a plain optimizer (`optim="sgd"`): with momentum or Adam the step is no longer a
    gradient step, though the iterates still stay in the balls.

    DeepSpeed is refused: its float32 master copy of the residuals would undo the projection at the next step.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if getattr(args, "deepspeed", None):
            raise NotImplementedError("DeltaBallProjectionCallback does not project DeepSpeed's float32 master copy; "
                                      "train the few-shot head without DeepSpeed (it is small) or with DDP.")
        if model is not None and not hasattr(extract_model_from_parallel(model), "project_residuals_"):
            raise TypeError(f"{type(extract_model_from_parallel(model)).__name__} has no `project_residuals_()`; "
                            "this callback is for modeling_diht.DiHTForImageClassification.")

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is not None:
            extract_model_from_parallel(model).project_residuals_()


def sample_shots(dataset, *, label_column: str, image_column: str, num_classes: int, shots: int,
                 seed: int) -> tuple[list[int], list[int], int]:
    """k training and k validation rows per class, drawn with `seed`, skipping (and counting) undecodable images.

    Returns:
        `(train_rows, validation_rows, skipped_images)`.

    Raises:
        ValueError: a label outside the classes, or a class with fewer than 2k decodable images.
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    for row, label in enumerate(dataset[label_column]):
        if not 0 <= label < num_classes:
            raise ValueError(f"row {row} has label {label}, outside the {num_classes} classes.")
        by_class[label].append(row)
    rng, train, validation, skipped = random.Random(seed), [], [], 0
    for label in range(num_classes):
        candidates = sorted(by_class[label])
        rng.shuffle(candidates)
        chosen = []
        for row in candidates:
            if len(chosen) == 2 * shots:
                break
            try:
                load_image(dataset[row][image_column])
            except UndecodableImageError as error:
                logger.warning("skipping row %d: %s", row, error)
                skipped += 1
                continue
            chosen.append(row)
        if len(chosen) < 2 * shots:
            raise ValueError(f"class {label} has {len(chosen)} decodable images; {shots} shots need {2 * shots} "
                             "(training and validation).")
        train += chosen[:shots]
        validation += chosen[shots:]
    return train, validation, skipped


def few_shot_learning_rate(model, scaled_learning_rate: float = 2.0) -> float:
    """The SGD rate `scaled / s²` for a head with logit scale s: a gradient step moves the logits by
    `learning_rate · s² · (a gradient of order 1)`, so this moves them by about `scaled` logit units."""
    return scaled_learning_rate / float(model.classifier_scale()) ** 2


@dataclass
class LoraSettings:
    """LoRA adapters on the image tower's q/v projections (`peft`)."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0


def with_lora(model, settings: LoraSettings | None = None):
    """`model` with LoRA adapters on the image tower's q/v projections; the head stays trainable (`modules_to_save`).

    LoRA's B matrices start at zero, so the adapted model computes exactly what `model` does until it trains.
    """
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=LORA_TARGET_MODULES, modules_to_save=["classifier"])
    with warnings.catch_warnings():  # peft 0.21 calls a transformers method deprecated in 5.x; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def merge_lora(model):
    """A plain model: LoRA adapters merged into the tower, the trained head in place (no-op without adapters)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


@dataclass
class FewShotCandidate:
    """One point of the grid: its radii, whether it trained, its validation accuracy and its loss curve ends."""

    delta: float
    bias_delta: float
    trained: bool
    validation_top1: float
    train_loss_first: float | None = None
    train_loss_last: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class FewShotResult:
    """The chosen model (LoRA merged), the chosen grid point and the whole grid, in tie-break order."""

    model: Any
    chosen: FewShotCandidate
    grid: list[FewShotCandidate] = field(default_factory=list)


def _train_one(base, delta: float, bias_delta: float, train, collator, training: TrainingArguments,
               lora: LoraSettings | None) -> tuple[Any, list[float]]:
    """Projected gradient descent from the zero-shot head for one (δ, δ_b): the trained model and its losses."""
    model = copy.deepcopy(base)
    model.config.few_shot_delta, model.config.few_shot_bias_delta = delta, bias_delta
    if lora is not None:
        model = with_lora(model, lora)
    trainer = Trainer(model=model, args=training, train_dataset=train, data_collator=collator,
                      callbacks=[DeltaBallProjectionCallback()])
    trainer.remove_callback(PrinterCallback)  # one summary line per grid point instead
    trainer.train()
    return model, [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def few_shot_search(base, train, *, validate: Callable[[Any], float], collator, training: TrainingArguments,
                    deltas=(0.0, 0.05, 0.1, 0.25, 0.5, 1.0), bias_deltas=(0.0, 0.1), trains_tower: bool = False,
                    lora: LoraSettings | None = None,
                    report: Callable[[FewShotCandidate], None] | None = None) -> FewShotResult:
    """Train one model per (δ, δ_b) of the grid and keep the best on the validation shots (DiHT, arXiv 2301.02280).

    Candidates in tie-break order: zero-shot (`base` untrained) first, then δ ascending, then δ_b ascending; the
    first best one wins, so zero-shot is kept unless a trained point does strictly better.

    Args:
        base: a `DiHTForImageClassification` with W₀ set and zero residuals.
        train: the training shots (rows for `collator`).
        validate: the validation accuracy of a model (e.g. `evaluation.evaluate_image_classifier` on the validation
            shots).
        collator: batches of the training shots (`trainers.ImageLabelCollator`).
        training: the `Trainer`'s arguments (plain SGD, see `few_shot_learning_rate`).
        deltas, bias_deltas: the grid of radii (0 is always added).
        trains_tower: the image tower trains too (full fine-tuning or LoRA), so δ = δ_b = 0 is trained as well.
        lora: add LoRA adapters to the image tower of every trained model.
        report: called with every trained grid point (progress lines).

    Returns:
        The chosen model (adapters merged), its grid point and the whole grid.
    """
    deltas, bias_deltas = sorted({0.0, *deltas}), sorted({0.0, *bias_deltas})
    if min(deltas + bias_deltas) < 0:
        raise ValueError("δ and δ_b are radii: the grids must be non-negative.")
    trains_tower = trains_tower or lora is not None
    best = FewShotCandidate(0.0, 0.0, trained=False, validation_top1=validate(base))
    grid, best_model = [best], base
    for delta in deltas:
        for bias_delta in bias_deltas:
            if delta == bias_delta == 0 and not trains_tower:
                continue  # both balls are {0}: the model stays exactly zero-shot, the entry above
            model, losses = _train_one(base, delta, bias_delta, train, collator, training, lora)
            candidate = FewShotCandidate(delta, bias_delta, trained=True, validation_top1=validate(model),
                                         train_loss_first=losses[0] if losses else None,
                                         train_loss_last=losses[-1] if losses else None)
            grid.append(candidate)
            if report is not None:
                report(candidate)
            if candidate.validation_top1 > best.validation_top1:
                best, best_model = candidate, model
    return FewShotResult(model=merge_lora(best_model), chosen=best, grid=grid)
