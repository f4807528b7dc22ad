"""Few-shot classification with prompt initialisation: DiHT's zero-shot classifier plus residuals in a δ-ball.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280, §few-shot (PAPERS.md §1.5):

    min_{‖W‖ ≤ δ, ‖b‖ ≤ δ_b}  Σ_i CE(y_i, x_iᵀ (W + W₀) + b)

W₀ is the zero-shot classifier built from the class prompts, W and b are learned by projected gradient descent, and
δ, δ_b are chosen by grid search on held-out shots. The grid includes δ = δ_b = 0, so the chosen model is never worse
than zero-shot on those shots (on the test images it can be: k held-out shots per class are a noisy judge).

    python examples/few_shot.py                                   # the embedded demo (runs pretrain.py first if needed)
    python examples/few_shot.py --model_name_or_path diht-b16 --dataset user/pets --test_split test \\
        --shots 4 --templates openai_imagenet --lora

It samples `--shots` images per class from `--train_split` for training and as many again for validation, trains
one `DiHTForImageClassification` per (δ, δ_b) of the grid with the transformers `Trainer` (plain full-batch SGD for
20 steps at rate 2 / s², the projection after every step through `trainers.DeltaBallProjectionCallback`), keeps the
one with the best validation accuracy (ties go to the smaller δ, then δ_b), and reports zero-shot and few-shot
top-1 on `--test_split`. With `--lora`, LoRA adapters on the image tower's attention (q_proj, v_proj, through `peft`)
train with the residuals (at the same rate); LoRA's B starts at zero, so step 0 is still zero-shot. It writes
`results.json` and `model/` (the chosen model, adapters merged, with the image processor) to `--output_dir`;
`pipeline("image-classification", model=<output_dir>/model)` loads it.

Data: anything `curation.sources.load_source` opens (a Hub name, a `save_to_disk` folder, parquet/arrow/json files,
webdataset shards, an image folder) with an image column and an integer label column; class names come from the
label's `ClassLabel` or `--class_names`. Without `--dataset`, freshly rendered synthetic scenes (the demo's 20
colour × shape classes, rendered with seeds other than the pretraining demo's) with the demo's prompt.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import AutoImageProcessor, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain import DEMO_CHECKPOINT, ensure_demo_checkpoint  # noqa: E402
from synthetic_scenes import CLASS_PROMPT, build_scenes, class_names  # noqa: E402

from curation import load_image  # noqa: E402
from curation.images import UndecodableImageError  # noqa: E402
from curation.sources import load_source, undecoded  # noqa: E402
from evaluation import image_batches, resolve_templates, zero_shot_classifier  # noqa: E402
from evaluation.zero_shot import ImageBatchCollator  # noqa: E402
from modeling_diht import DiHTForImageClassification, DiHTModel  # noqa: E402
from trainers import DeltaBallProjectionCallback  # noqa: E402

logger = logging.getLogger("few_shot")
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
# LoRA on the image tower's attention only: the query and value projections, as in LoRA's own recipe (Hu et al.,
# 2021, §7.1). A regular expression, so that no text-tower module could ever match.
LORA_TARGET_MODULES = r"vision_model\..*\.self_attn\.(q_proj|v_proj)"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=DEMO_CHECKPOINT, metadata={"help": "DiHT (or CLIP) dual-encoder checkpoint with tokenizer and image "
                                                 "processor. The default is the pretraining demo's output; it is "
                                                 "trained first when missing."})
    lora: bool = field(default=False, metadata={"help": "Add LoRA adapters to the image tower's q_proj/v_proj."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on LoRA's input."})
    logit_scale: float | None = field(
        default=None, metadata={"help": "Multiplier s of the head's logits (default: the checkpoint's "
                                        "exp(logit_scale), frozen)."})


@dataclass
class DataArguments:
    dataset: str | None = field(
        default=None, metadata={"help": "Hub name, save_to_disk folder, data files or shards, or an image folder "
                                        "(default: rendered synthetic scenes)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of a Hub dataset."})
    train_split: str = field(default="train", metadata={"help": "Split the training and validation shots come "
                                                                "from."})
    test_split: str = field(default="test", metadata={"help": "Split the accuracy is reported on."})
    image_column: str | None = field(default=None, metadata={"help": f"Default: first of {IMAGE_COLUMNS}."})
    label_column: str = field(default="label", metadata={"help": "Integer class column."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Class names in label order (default: the ClassLabel's names)."})
    templates: list[str] | None = field(
        default=None, metadata={"help": "Prompt templates with one '{}', or one name of evaluation.resolve_templates "
                                        "(openai_imagenet, simple, none) or a file. Default: the demo's prompt, "
                                        "or openai_imagenet for a dataset."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Cap on test images."})
    demo_seed: int = field(default=2, metadata={"help": "Demo data: seed of the shot pool (the test images use "
                                                        "seed + 1). The pretraining demo uses 0 and 1."})
    demo_num_test: int = field(default=500, metadata={"help": "Demo data: test images."})


@dataclass
class FewShotArguments:
    shots: int = field(default=1, metadata={"help": "k: training images per class (as many again validate)."})
    deltas: list[float] = field(
        default_factory=lambda: [0.0, 0.05, 0.1, 0.25, 0.5, 1.0],
        metadata={"help": "Grid of δ, the Frobenius radius of the weight residual (0 is always added)."})
    bias_deltas: list[float] = field(
        default_factory=lambda: [0.0, 0.1],
        metadata={"help": "Grid of δ_b, the radius of the bias residual (0 is always added)."})
    scaled_learning_rate: float = field(
        default=2.0, metadata={"help": "SGD rate in logit units, used when --learning_rate is not given: the "
                                       "learning rate is this / s² (s the head's logit scale), because a gradient "
                                       "step moves the logits by learning_rate · s² · (a gradient of order 1)."})
    train_image_tower: bool = field(default=False, metadata={"help": "Also train the image tower (full fine-tuning)."})


def few_shot_defaults() -> list[str]:
    """Training arguments of the few-shot runs (command-line arguments override them).

    Plain SGD (no momentum, no weight decay, no gradient clipping, constant rate), so that step + projection is
    exactly projected gradient descent; full batches (the k·C shots fit in one batch of the demo). The learning
    rate comes from `--scaled_learning_rate` unless given. Steps, rate and grid are ours, not the paper's: on the
    demo they bring the residual to the boundary of the small balls that 1-shot validation picks.
    """
    return ["--output_dir", "outputs/few_shot", "--optim", "sgd", "--max_steps", "20",
            "--per_device_train_batch_size", "128", "--lr_scheduler_type", "constant", "--weight_decay", "0",
            "--max_grad_norm", "0", "--logging_steps", "5", "--logging_first_step", "true", "--save_strategy", "no",
            "--report_to", "none", "--seed", "0", "--remove_unused_columns", "false", "--label_names", "labels",
            "--disable_tqdm", "true", "--dataloader_pin_memory", str(torch.cuda.is_available()).lower()]


# ---- data ----------------------------------------------------------------------------------------------------------

def demo_datasets(image_size: int, shots: int, seed: int, num_test: int) -> DatasetDict:
    """Rendered scenes of the demo's 20 colour × shape classes: a shot pool and a test split, `ClassLabel` labels."""
    names = class_names()
    render_size = 2 * image_size  # as the pretraining demo renders; the image processor resizes
    pool_size = max(200, 8 * 2 * shots * len(names))  # ~8 times the shots needed per class
    label = ClassLabel(names=names)
    pool = build_scenes(pool_size, image_size=render_size, seed=seed).cast_column("label", label)
    test = build_scenes(num_test, image_size=render_size, seed=seed + 1).cast_column("label", label)
    return DatasetDict(train=pool.remove_columns(["caption", "kind"]), test=test.remove_columns(["caption", "kind"]))


def resolve_image_column(dataset: Dataset, requested: str | None) -> str:
    column = requested or next((c for c in IMAGE_COLUMNS if c in dataset.column_names), None)
    if column is None or column not in dataset.column_names:
        raise ValueError(f"no image column {column or ''} in {dataset.column_names}; pass --image_column.")
    return column


def names_of_classes(dataset: Dataset, label_column: str, given: list[str] | None) -> list[str]:
    if label_column not in dataset.column_names:
        raise ValueError(f"no label column {label_column!r} in {dataset.column_names}; pass --label_column.")
    if given:
        return list(given)
    feature = dataset.features[label_column]
    if not isinstance(feature, ClassLabel):
        raise ValueError(f"{label_column!r} is not a ClassLabel column: pass the class names with --class_names.")
    return list(feature.names)


def sample_shots(dataset: Dataset, *, label_column: str, image_column: str, num_classes: int, shots: int,
                 seed: int) -> tuple[list[int], list[int], int]:
    """k training and k validation rows per class, drawn with `seed`, skipping (and counting) undecodable images.

    Returns:
        `(train_rows, validation_rows, skipped_images)`; raises when a class has fewer than 2k decodable images.
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


@dataclass
class ImageLabelCollator:
    """Rows `{image, label}` to `{"pixel_values": (B, 3, H, W), "labels": (B,)}` for the Trainer; images decoded with
    `curation.load_image` through the evaluation's `ImageBatchCollator` (the shots were checked to decode)."""

    image_processor: Any
    image_column: str
    label_column: str

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = ImageBatchCollator(self.image_processor, self.image_column, (self.label_column,))(list(enumerate(rows)))
        if batch["skipped"]:
            raise ValueError(f"{batch['skipped']} training images could not be decoded.")
        return {"pixel_values": batch["pixel_values"], "labels": torch.tensor(batch[self.label_column])}


# ---- models ----------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def predict(model, dataset: Dataset, image_processor, *, image_column: str, label_column: str,
            batch_size: int = 64) -> tuple[list[int], list[int], int]:
    """Top-1 class predictions of a classification model: `(predictions, labels, skipped_images)`."""
    model.eval()
    device = next(model.parameters()).device
    predictions, labels, skipped = [], [], 0
    for batch in image_batches(dataset, image_processor, image_column=image_column, keep_columns=[label_column],
                               batch_size=batch_size):
        skipped += batch["skipped"]
        if batch["pixel_values"] is not None:
            predictions += model(pixel_values=batch["pixel_values"].to(device)).logits.argmax(-1).tolist()
            labels += batch[label_column]
    return predictions, labels, skipped


def top1(predictions: list[int], labels: list[int]) -> float:
    return sum(p == y for p, y in zip(predictions, labels)) / max(1, len(labels))


def with_lora(model: DiHTForImageClassification, args: ModelArguments):
    """`model` with LoRA adapters on the image tower's q/v projections; the head stays trainable (`modules_to_save`).

    LoRA's B matrices start at zero, so the adapted model computes exactly what `model` does until it trains.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=LORA_TARGET_MODULES, modules_to_save=["classifier"])
    with warnings.catch_warnings():  # peft 0.21 calls a transformers method deprecated in 5.x; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def train_one(base: DiHTForImageClassification, delta: float, bias_delta: float, train: Dataset, collator,
              training: TrainingArguments, model_args: ModelArguments) -> tuple[Any, list[float]]:
    """Projected gradient descent from the zero-shot head for one (δ, δ_b): the trained model and its losses."""
    model = copy.deepcopy(base)
    model.config.few_shot_delta, model.config.few_shot_bias_delta = delta, bias_delta
    if model_args.lora:
        model = with_lora(model, model_args)
    trainer = Trainer(model=model, args=training, train_dataset=train, data_collator=collator,
                      callbacks=[DeltaBallProjectionCallback()])
    trainer.remove_callback(PrinterCallback)  # one summary line per grid point instead
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return model, losses


def unwrap_for_saving(model) -> DiHTForImageClassification:
    """A plain `DiHTForImageClassification`: LoRA adapters merged into the tower, the trained head in place."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


# ---- the run ---------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, FewShotArguments, TrainingArguments))
    model_args, data, few_shot, training = parser.parse_args_into_dataclasses(args=few_shot_defaults() + argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    if few_shot.shots < 1:
        raise ValueError(f"--shots must be at least 1, got {few_shot.shots}")
    ensure_demo_checkpoint(model_args.model_name_or_path)
    started = time.perf_counter()  # the few-shot run itself, not the pretraining demo
    source = model_args.model_name_or_path
    dual = DiHTModel.from_pretrained(source).to(training.device).eval()
    tokenizer, image_processor = AutoTokenizer.from_pretrained(source), AutoImageProcessor.from_pretrained(source)

    if data.dataset is None:
        splits = demo_datasets(dual.config.vision_config.image_size, few_shot.shots, data.demo_seed,
                               data.demo_num_test)
        pool, test = splits["train"], splits["test"]
        templates = resolve_templates(data.templates or [CLASS_PROMPT.replace("{color} {shape}", "{}")])
    else:
        pool = load_source(data.dataset, split=data.train_split, name=data.dataset_config_name)
        test = load_source(data.dataset, split=data.test_split, name=data.dataset_config_name)
        templates = resolve_templates(data.templates[0] if data.templates and len(data.templates) == 1
                                      and "{}" not in data.templates[0] else (data.templates or "openai_imagenet"))
    if data.max_test_samples is not None:
        test = test.select(range(min(len(test), data.max_test_samples)))
    image_column = resolve_image_column(pool, data.image_column)
    names = names_of_classes(pool, data.label_column, data.class_names)
    pool, test = undecoded(pool, image_column), undecoded(test, image_column)

    train_rows, validation_rows, skipped_shots = sample_shots(
        pool, label_column=data.label_column, image_column=image_column, num_classes=len(names),
        shots=few_shot.shots, seed=training.seed)
    train, validation = pool.select(train_rows), pool.select(validation_rows)
    print(f"{len(names)} classes, {few_shot.shots} shot(s) each: {len(train)} training and {len(validation)} "
          f"validation images, {len(test)} test images; {len(templates)} prompt template(s)")

    # W₀: the zero-shot classifier of the class prompts (the mean of each class's normalised prompt embeddings).
    zero_shot_weights = zero_shot_classifier(dual, tokenizer, names, templates)  # (C, P)
    base = DiHTForImageClassification.from_dual_encoder(
        dual, zero_shot_weights, names, few_shot_logit_scale=model_args.logit_scale,
        few_shot_train_image_tower=few_shot.train_image_tower)
    del dual
    if not any(arg == "--learning_rate" or arg.startswith("--learning_rate=") for arg in argv):
        training.learning_rate = few_shot.scaled_learning_rate / float(base.classifier_scale()) ** 2
    evaluate = dict(image_processor=image_processor, image_column=image_column, label_column=data.label_column)
    zero_shot_val = top1(*predict(base, validation, **evaluate)[:2])

    collator = ImageLabelCollator(image_processor, image_column, data.label_column)
    trains_tower = model_args.lora or few_shot.train_image_tower
    deltas, bias_deltas = sorted({0.0, *few_shot.deltas}), sorted({0.0, *few_shot.bias_deltas})
    if min(deltas + bias_deltas) < 0:
        raise ValueError("δ and δ_b are radii: the grids must be non-negative.")
    # Candidates in tie-break order: zero-shot, then δ ascending, then δ_b ascending; the first best one wins.
    grid = [{"delta": 0.0, "bias_delta": 0.0, "trained": False, "validation_top1": zero_shot_val}]
    best, best_model = grid[0], base
    for delta in deltas:
        for bias_delta in bias_deltas:
            if delta == bias_delta == 0 and not trains_tower:
                continue  # both balls are {0}: the model stays exactly zero-shot, the entry above
            model, losses = train_one(base, delta, bias_delta, train, collator, training, model_args)
            entry = {"delta": delta, "bias_delta": bias_delta, "trained": True,
                     "validation_top1": top1(*predict(model, validation, **evaluate)[:2]),
                     "train_loss_first": losses[0], "train_loss_last": losses[-1]}
            grid.append(entry)
            print(f"  δ={delta:<5g} δ_b={bias_delta:<5g} train loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                  f"validation top-1 {entry['validation_top1']:.1%}")
            if entry["validation_top1"] > best["validation_top1"]:
                best, best_model = entry, model

    test_zero_shot, labels, skipped_test = predict(base, test, **evaluate)
    test_few_shot, _, _ = predict(best_model, test, **evaluate)
    chosen = unwrap_for_saving(best_model)
    results = {
        "zero_shot_top1": top1(test_zero_shot, labels),
        "few_shot_top1": top1(test_few_shot, labels),
        "chosen_delta": best["delta"],
        "chosen_bias_delta": best["bias_delta"],
        "chosen_is_zero_shot": not best["trained"],
        "zero_shot_validation_top1": zero_shot_val,
        "grid": grid,
        "shots": few_shot.shots,
        "num_classes": len(names),
        "num_train": len(train),
        "num_validation": len(validation),
        "num_test": len(labels),
        "skipped_images": {"shots": skipped_shots, "test": skipped_test},
        "seeds": {"sampling_and_training": training.seed,
                  **({"demo_pool": data.demo_seed, "demo_test": data.demo_seed + 1} if data.dataset is None else {})},
        "lora": model_args.lora,
        "train_image_tower": few_shot.train_image_tower,
        "logit_scale": float(chosen.classifier_scale()),
        "optimizer": {"optim": str(training.optim.value if hasattr(training.optim, "value") else training.optim),
                      "learning_rate": training.learning_rate, "max_steps": training.max_steps,
                      "batch_size": training.per_device_train_batch_size},
        "model_name_or_path": source,
        "num_templates": len(templates),
        "seconds": round(time.perf_counter() - started, 1),
    }

    output_dir = Path(training.output_dir)
    chosen.save_pretrained(output_dir / "model")
    image_processor.save_pretrained(output_dir / "model")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"zero-shot top-1 {results['zero_shot_top1']:.1%} -> few-shot ({few_shot.shots}-shot, "
          f"δ={best['delta']:g}, δ_b={best['bias_delta']:g}) top-1 {results['few_shot_top1']:.1%} on "
          f"{len(labels)} test images, in {results['seconds']:.0f} s; results and model in {output_dir}")
    return results


if __name__ == "__main__":
    main()
