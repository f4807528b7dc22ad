"""Few-shot classification with prompt initialisation: DiHT's zero-shot classifier plus residuals in a δ-ball.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280 (few-shot linear probing with prompt initialisation):

    min_{‖W‖ ≤ δ, ‖b‖ ≤ δ_b}  Σ_i CE(y_i, x_iᵀ (W + W₀) + b)

W₀ is the zero-shot classifier built from the class prompts, W and b are learned by projected gradient descent, and
δ, δ_b are chosen by grid search on held-out shots. The grid includes δ = δ_b = 0, so the chosen model is never worse
than zero-shot on those shots (on the test images it can be: k held-out shots per class are a noisy judge).

    python examples/few_shot.py                                   # the embedded demo (runs pretrain.py first if needed)
    python examples/few_shot.py --model_name_or_path diht-b16 --dataset_name user/pets --test_split test \\
        --shots 4 --templates openai_imagenet --lora

It samples `--shots` images per class from `--train_split` for training and as many again for validation
(`trainers.sample_shots`), trains one `DiHTForImageClassification` per (δ, δ_b) of the grid with the transformers
`Trainer` (plain full-batch SGD for 20 steps at rate 2 / s², the projection after every step through
`trainers.DeltaBallProjectionCallback`; `trainers.few_shot_search`), keeps the one with the best validation accuracy
(ties go to the smaller δ, then δ_b), and reports zero-shot and few-shot top-1 on `--test_split`
(`evaluation.evaluate_image_classifier`). With `--lora`, LoRA adapters on the image tower's attention (q_proj,
v_proj, through `peft`) train with the residuals (at the same rate); LoRA's B starts at zero, so step 0 is still
zero-shot. It writes `results.json` and `model/` (the chosen model, adapters merged, with the image processor) to
`--output_dir`; `pipeline("image-classification", model=<output_dir>/model)` loads it.

Data: every command's data options (`image_text_data.DataSourceArguments`) with an image column and an integer label
column; class names come from the label's `ClassLabel` or `--class_names`. Without data, freshly rendered scenes of
the demo's 20 colour × shape classes (seeds other than the pretraining demo's) with the demo's prompt.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import AutoImageProcessor, AutoTokenizer, HfArgumentParser, TrainingArguments

from evaluation import evaluate_image_classifier, resolve_templates, zero_shot_classifier
from image_text_data import DataSourceArguments, resolve_image_column, undecoded
from image_text_data.demo import CLASS_TEMPLATE, DEMO_CHECKPOINT, build_scenes, class_names, ensure_demo_checkpoint
from modeling_diht import DiHTForImageClassification, DiHTModel
from trainers import ImageLabelCollator, LoraSettings, few_shot_learning_rate, few_shot_search, sample_shots

logger = logging.getLogger("few_shot")


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
class FewShotDataArguments:
    train_split: str = field(default="train", metadata={"help": "Split the training and validation shots come "
                                                                "from."})
    test_split: str = field(default="test", metadata={"help": "Split the accuracy is reported on."})
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


def demo_datasets(image_size: int, shots: int, seed: int, num_test: int) -> DatasetDict:
    """Rendered scenes of the demo's 20 colour × shape classes: a shot pool and a test split, `ClassLabel` labels."""
    names = class_names()
    render_size = 2 * image_size  # as the pretraining demo renders; the image processor resizes
    pool_size = max(200, 8 * 2 * shots * len(names))  # ~8 times the shots needed per class
    label = ClassLabel(names=names)
    pool = build_scenes(pool_size, image_size=render_size, seed=seed).cast_column("label", label)
    test = build_scenes(num_test, image_size=render_size, seed=seed + 1).cast_column("label", label)
    return DatasetDict(train=pool.remove_columns(["caption", "kind"]), test=test.remove_columns(["caption", "kind"]))


def names_of_classes(dataset: Dataset, label_column: str, given: list[str] | None) -> list[str]:
    if label_column not in dataset.column_names:
        raise ValueError(f"no label column {label_column!r} in {dataset.column_names}; pass --label_column.")
    if given:
        return list(given)
    feature = dataset.features[label_column]
    if not isinstance(feature, ClassLabel):
        raise ValueError(f"{label_column!r} is not a ClassLabel column: pass the class names with --class_names.")
    return list(feature.names)


def main(argv: list[str] | None = None) -> dict:
    # 1. Arguments, and the demo's checkpoint when it is asked for and missing.
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataSourceArguments, FewShotDataArguments, FewShotArguments,
                               TrainingArguments))
    model_args, source, data, few_shot, training = parser.parse_args_into_dataclasses(args=few_shot_defaults() + argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    if few_shot.shots < 1:
        raise ValueError(f"--shots must be at least 1, got {few_shot.shots}")
    ensure_demo_checkpoint(model_args.model_name_or_path, Path(__file__).with_name("pretrain.py"))
    started = time.perf_counter()  # the few-shot run itself, not the pretraining demo
    checkpoint = model_args.model_name_or_path
    dual = DiHTModel.from_pretrained(checkpoint).to(training.device).eval()
    tokenizer, image_processor = AutoTokenizer.from_pretrained(checkpoint), AutoImageProcessor.from_pretrained(checkpoint)

    # 2. Data: the shot pool and the test split, and the class prompts.
    if not source.has_source:
        splits = demo_datasets(dual.config.vision_config.image_size, few_shot.shots, data.demo_seed,
                               data.demo_num_test)
        pool, test = splits["train"], splits["test"]
        templates = resolve_templates(data.templates or [CLASS_TEMPLATE])
    else:
        pool, test = source.load(data.train_split), source.load(data.test_split)
        templates = resolve_templates(data.templates[0] if data.templates and len(data.templates) == 1
                                      and "{}" not in data.templates[0] else (data.templates or "openai_imagenet"))
    if data.max_test_samples is not None:
        test = test.select(range(min(len(test), data.max_test_samples)))
    image_column = resolve_image_column(pool, source.image_column)
    names = names_of_classes(pool, data.label_column, data.class_names)
    pool, test = undecoded(pool, image_column), undecoded(test, image_column)
    train_rows, validation_rows, skipped_shots = sample_shots(
        pool, label_column=data.label_column, image_column=image_column, num_classes=len(names),
        shots=few_shot.shots, seed=training.seed)
    train, validation = pool.select(train_rows), pool.select(validation_rows)
    print(f"{len(names)} classes, {few_shot.shots} shot(s) each: {len(train)} training and {len(validation)} "
          f"validation images, {len(test)} test images; {len(templates)} prompt template(s)")

    # 3. The zero-shot model: W₀ is the zero-shot classifier of the class prompts.
    zero_shot_weights = zero_shot_classifier(dual, tokenizer, names, templates)  # (C, P)
    base = DiHTForImageClassification.from_dual_encoder(
        dual, zero_shot_weights, names, few_shot_logit_scale=model_args.logit_scale,
        few_shot_train_image_tower=few_shot.train_image_tower)
    del dual
    if not any(arg == "--learning_rate" or arg.startswith("--learning_rate=") for arg in argv):
        training.learning_rate = few_shot_learning_rate(base, few_shot.scaled_learning_rate)

    # 4. The grid search over (δ, δ_b), zero-shot first.
    def accuracy(model, dataset) -> float:
        return evaluate_image_classifier(model, image_processor, dataset, image_column=image_column,
                                         label_column=data.label_column).metrics["top1"]

    def report(candidate) -> None:
        print(f"  δ={candidate.delta:<5g} δ_b={candidate.bias_delta:<5g} train loss {candidate.train_loss_first:.3f} "
              f"-> {candidate.train_loss_last:.3f}, validation top-1 {candidate.validation_top1:.1%}")

    lora = (LoraSettings(model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) if model_args.lora
            else None)
    search = few_shot_search(
        base, train, validate=lambda model: accuracy(model, validation),
        collator=ImageLabelCollator(image_processor, image_column=image_column, label_column=data.label_column),
        training=training, deltas=few_shot.deltas, bias_deltas=few_shot.bias_deltas,
        trains_tower=few_shot.train_image_tower, lora=lora, report=report)

    # 5. Zero-shot and few-shot accuracy on the test images; the results and the chosen model.
    zero_shot = evaluate_image_classifier(base, image_processor, test, image_column=image_column,
                                          label_column=data.label_column)
    chosen, model = search.chosen, search.model
    results = {
        "zero_shot_top1": zero_shot.metrics["top1"],
        "few_shot_top1": accuracy(model, test),
        "chosen_delta": chosen.delta,
        "chosen_bias_delta": chosen.bias_delta,
        "chosen_is_zero_shot": not chosen.trained,
        "zero_shot_validation_top1": search.grid[0].validation_top1,
        "grid": [candidate.to_dict() for candidate in search.grid],
        "shots": few_shot.shots,
        "num_classes": len(names),
        "num_train": len(train),
        "num_validation": len(validation),
        "num_test": zero_shot.num_images,
        "skipped_images": {"shots": skipped_shots, "test": zero_shot.skipped_images},
        "seeds": {"sampling_and_training": training.seed,
                  **({"demo_pool": data.demo_seed, "demo_test": data.demo_seed + 1} if not source.has_source
                     else {})},
        "lora": model_args.lora,
        "train_image_tower": few_shot.train_image_tower,
        "logit_scale": float(model.classifier_scale()),
        "optimizer": {"optim": str(getattr(training.optim, "value", training.optim)),
                      "learning_rate": training.learning_rate, "max_steps": training.max_steps,
                      "batch_size": training.per_device_train_batch_size},
        "model_name_or_path": checkpoint,
        "num_templates": len(templates),
        "seconds": round(time.perf_counter() - started, 1),
    }
    output_dir = Path(training.output_dir)
    model.save_pretrained(output_dir / "model")
    image_processor.save_pretrained(output_dir / "model")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"zero-shot top-1 {results['zero_shot_top1']:.1%} -> few-shot ({few_shot.shots}-shot, "
          f"δ={chosen.delta:g}, δ_b={chosen.bias_delta:g}) top-1 {results['few_shot_top1']:.1%} on "
          f"{zero_shot.num_images} test images, in {results['seconds']:.0f} s; results and model in {output_dir}")
    return results


if __name__ == "__main__":
    main()
