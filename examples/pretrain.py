"""Pre-train a DiHT model: CAT filtering, concept distillation and HN-NCE over the global batch.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280.

    python examples/pretrain.py                        # the embedded demo: CPU, a few minutes, offline
    accelerate launch examples/pretrain.py             # the same on every process of an accelerate config
    accelerate launch --config_file examples/configs/deepspeed_zero2.yaml examples/pretrain.py \\
        --dataset_name laion/some-pairs --preset diht_vitb16_224px --bf16 --max_steps 100000 ...

With no dataset it builds a pool of rendered shapes whose captions mix good pairs with pairs CAT must remove,
filters the pool with CAT (`curation.cat_filter`), labels concepts with a small frozen teacher it trains itself
(`curation.label_concepts`), trains a tiny DiHT with `trainers.DiHTTrainer`, and evaluates zero-shot
classification and retrieval on held-out images against chance (`evaluation`, DiHT's protocols; with
`--zero_shot_eval_steps N` also every N steps). It writes to `--output_dir`: `results.json` (metrics, evaluation
records, CAT report), `training_curves.png`, `model/` (a checkpoint that `AutoModel` and
`pipeline("zero-shot-image-classification")` load, with its model card `README.md` from `hub_cards`) and the Trainer's
checkpoints when `--save_strategy` asks. `--push_to_hub --hub_model_id me/name` uploads `model/` with its card in one
commit at the end (the Trainer's own push at every save is turned off); `--hub_dry_run` lists the files instead.

Data: a Hub name or local folder (`--dataset_name`), files (`--train_files`, `.tar` shards as img2dataset writes
them are read as webdataset), a `save_to_disk` folder (`--dataset_path`), optionally `--streaming`. Model: a
checkpoint (`--model_name_or_path`, DiHT or CLIP, for warm starts), a preset (`--preset`) or a config file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, IterableDataset
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPImageProcessor,
    HfArgumentParser,
    PreTrainedTokenizerFast,
    set_seed,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_scenes import CLASS_PROMPT, KINDS, build_scenes, class_names  # noqa: E402

from curation import cat_filter, concept_vocabulary, label_concepts  # noqa: E402
from curation.sources import load_source, undecoded  # noqa: E402
from evaluation import ClassificationTask, RetrievalTask, ZeroShotEvaluationCallback  # noqa: E402
from hub_cards import publish, write_model_card  # noqa: E402
from modeling_diht import DiHTConfig, DiHTModel  # noqa: E402
from trainers import (  # noqa: E402
    DiHTTrainer,
    DiHTTrainingArguments,
    ImageTextCollator,
    diht_train_transform,
    plot_training_curves,
)

logger = logging.getLogger("pretrain")
SOT, EOT, PAD, UNK = "<|startoftext|>", "<|endoftext|>", "<pad>", "<unk>"
IMAGE_COLUMNS, CAPTION_COLUMNS = ("image", "jpg", "jpeg", "png", "webp"), ("caption", "txt", "text")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "DiHT or CLIP checkpoint (Hub id or folder) to start from."})
    preset: str | None = field(default=None, metadata={"help": "A DiHT architecture, e.g. diht_vitb16_224px."})
    config_name: str | None = field(default=None, metadata={"help": "A DiHT config.json to build a random model."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the checkpoint's)."})
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor (default: ditto)."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager, sdpa or flash_attention_2."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "load_dataset path: Hub name or folder."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "load_dataset configuration."})
    train_files: list[str] | None = field(
        default=None, metadata={"help": "Data files (parquet/json/csv/arrow, or img2dataset .tar shards)."})
    dataset_path: str | None = field(default=None, metadata={"help": "A folder written by save_to_disk."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Held-out split for the final evaluation."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (needs --max_steps)."})
    image_column: str | None = field(default=None, metadata={"help": f"Default: first of {IMAGE_COLUMNS}."})
    caption_column: str | None = field(default=None, metadata={"help": f"Default: first of {CAPTION_COLUMNS}."})
    label_column: str = field(default="label", metadata={"help": "Class column of the eval split (zero-shot)."})
    prompt_template: str = field(default="a photo of a {}.", metadata={"help": "Zero-shot prompt for class names."})
    max_eval_samples: int = field(default=2000, metadata={"help": "Cap on held-out pairs evaluated."})
    zero_shot_eval_steps: int = field(
        default=0, metadata={"help": "Also evaluate zero-shot on the held-out pairs every N steps during training "
                                     "(evaluation.ZeroShotEvaluationCallback); 0: at the end only."})
    cat_filter: bool = field(default=True, metadata={"help": "Apply the CAT filter before training."})
    cat_min_complexity: int = field(default=1, metadata={"help": "CAT: smallest caption complexity kept."})
    cat_min_actions: int = field(default=1, metadata={"help": "CAT: fewest actions kept."})
    cat_text_spotting: bool = field(default=True, metadata={"help": "CAT: drop pairs whose image text repeats "
                                                                     "the caption (rapidocr)."})
    concept_distillation: bool = field(
        default=True, metadata={"help": "Train concept heads on teacher concepts (from --concept_teacher, a "
                                        "`concept_ids` column, or in the demo a small teacher it trains)."})
    concept_teacher: str | None = field(default=None, metadata={"help": "timm teacher name for concept labels."})
    concept_top_k: int = field(default=5, metadata={"help": "Teacher concepts kept per image."})
    concept_activation: str = field(
        default="softmax", metadata={"help": "Teacher scores: softmax (single-label classifiers such as ImageNet "
                                             "models) or sigmoid (multi-label; the demo's teacher)."})
    soft_concepts: bool = field(default=False, metadata={"help": "Teacher scores as soft targets, not top-k 1s."})
    train_augmentation: bool = field(default=True, metadata={"help": "DiHT's RandomResizedCrop(0.9, 1)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of the map steps."})


@dataclass
class PublishArguments:
    hub_dry_run: bool = field(default=False, metadata={
        "help": "With --push_to_hub (or alone): write the model card and list what would be uploaded; upload nothing."})
    license: str = field(default="apache-2.0", metadata={"help": "License id of the model card's metadata."})


@dataclass
class DemoArguments:
    num_train: int = field(default=2000, metadata={"help": "Demo: pairs in the raw pool before CAT."})
    num_eval: int = field(default=500, metadata={"help": "Demo: held-out pairs."})
    image_size: int = field(default=32, metadata={"help": "Demo: model input size (scenes render at 2x)."})
    noise_share: float = field(default=0.1, metadata={"help": "Demo: share of each kind of pair CAT removes."})
    teacher_steps: int = field(default=250, metadata={"help": "Demo: training steps of the concept teacher."})


def build_word_tokenizer(texts: list[str], max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the demo captions, with CLIP's start/end tokens and padding id 0 (offline)."""
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


def tiny_diht_config(tokenizer: PreTrainedTokenizerFast, image_size: int, training: DiHTTrainingArguments,
                     num_concepts: int) -> DiHTConfig:
    tower = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}
    return DiHTConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "max_position_embeddings": tokenizer.model_max_length,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={**tower, "image_size": image_size, "patch_size": 4},
        projection_dim=64,
        hn_nce_alpha=training.hn_nce_alpha,
        hn_nce_beta=training.hn_nce_beta,
        concept_head_sizes={"concepts": num_concepts} if num_concepts else None,
    )


# ---- data ----------------------------------------------------------------------------------------------------------

def load_pairs(data: DataArguments, split: str) -> Dataset | IterableDataset:
    """The user's dataset split, from a save_to_disk folder, data files or shards, or a Hub name / folder."""
    if data.train_files and split != data.train_split:
        raise ValueError("--train_files holds the training split only; give held-out data with --dataset_path or "
                         "--dataset_name and --eval_split.")
    source = data.dataset_path or data.train_files or data.dataset_name
    return load_source(source, split=split, streaming=data.streaming, name=data.dataset_config_name)


def resolve_columns(dataset, data: DataArguments) -> tuple[str, str]:
    names = list(dataset.column_names or (dataset.features or {}).keys())
    image = data.image_column or next((c for c in IMAGE_COLUMNS if c in names), None)
    caption = data.caption_column or next((c for c in CAPTION_COLUMNS if c in names), None)
    for kind, column in (("image", image), ("caption", caption)):
        if column is None or column not in names:
            raise ValueError(f"no {kind} column {column or ''} in the dataset's columns {names}; "
                             f"pass --{kind}_column.")
    return image, caption


def curate(dataset, data: DataArguments, training: DiHTTrainingArguments, image_column: str, caption_column: str,
           teacher, ocr_params: dict | None = None):
    """CAT filter, then teacher concepts: returns the dataset, the CAT report (or None) and the concept vocabulary."""
    report = None
    if data.cat_filter:
        with training.main_process_first(desc="CAT filter"):
            dataset, report = cat_filter(
                dataset, image_column=image_column, caption_column=caption_column,
                min_complexity=data.cat_min_complexity, min_actions=data.cat_min_actions,
                text_spotting=data.cat_text_spotting, num_proc=data.preprocessing_num_workers, ocr_params=ocr_params)
    vocabulary = []
    if not data.concept_distillation:
        return dataset, report, vocabulary
    if teacher is not None:
        with training.main_process_first(desc="concept labelling"):
            dataset = label_concepts(dataset, teacher, image_column=image_column, top_k=data.concept_top_k,
                                     return_scores=data.soft_concepts, num_proc=data.preprocessing_num_workers,
                                     activation=data.concept_activation)
        vocabulary = concept_vocabulary(dataset)
    elif "concept_ids" in (dataset.column_names or []):  # labelled earlier with examples/label_concepts.py
        vocabulary = concept_vocabulary(dataset)
    return dataset, report, vocabulary


# ---- evaluation ------------------------------------------------------------------------------------------------------

def held_out_tasks(held_out: Dataset, *, image_column: str, caption_column: str, label_column: str,
                   names: list[str] | None, template: str, info: dict) -> list[ClassificationTask | RetrievalTask]:
    """Zero-shot classification (when the classes are known) and retrieval on the held-out pairs.

    Retrieval keeps the images whose caption is unique in the held-out set: with the protocol's one relevant caption
    per image, a caption shared by several images (the demo's captions repeat) would count its twins as misses.
    """
    tasks = []
    if names:
        tasks.append(ClassificationTask(held_out, class_names=names, templates=[template], image_column=image_column,
                                        label_column=label_column, dataset_info=info))
    counts = Counter(held_out[caption_column])
    unique = [i for i, caption in enumerate(held_out[caption_column]) if counts[caption] == 1]
    tasks.append(RetrievalTask(held_out.select(unique), image_column=image_column, caption_column=caption_column,
                               dataset_info=info))
    return tasks


# ---- the run ---------------------------------------------------------------------------------------------------------

def demo_defaults() -> list[str]:
    """Training arguments of the embedded demo (command-line arguments override them)."""
    return ["--output_dir", "outputs/pretrain", "--per_device_train_batch_size", "64", "--max_steps", "400",
            "--learning_rate", "1e-3", "--weight_decay", "0.1", "--warmup_steps", "40", "--logging_steps", "20",
            "--lr_scheduler_type", "cosine", "--save_strategy", "no", "--report_to", "none", "--seed", "0",
            "--dataloader_pin_memory", str(torch.cuda.is_available()).lower()]


DEMO_CHECKPOINT = "outputs/pretrain/model"  # where the no-argument run leaves its model


def ensure_demo_checkpoint(path: str) -> None:
    """Train the embedded demo when `path` is its default checkpoint and missing: the no-argument path of
    `examples/zero_shot.py` and `examples/few_shot.py`. A path the user gave is never trained."""
    if path != DEMO_CHECKPOINT or Path(path).exists():
        return
    print(f"{path} not found: running the pretraining demo first (examples/pretrain.py, a few minutes on CPU)")
    main(["--output_dir", str(Path(path).parent)])


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, DemoArguments, PublishArguments, DiHTTrainingArguments))
    model_args, data, demo, hub, training = parser.parse_args_into_dataclasses(args=demo_defaults() + argv)
    # One commit with the final model and its card (hub_cards.publish) instead of the Trainer's push at every save.
    push_to_hub, training.push_to_hub = training.push_to_hub or hub.hub_dry_run, False
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training.should_log else logging.WARNING)
    is_demo = not (data.dataset_name or data.train_files or data.dataset_path)

    teacher, ocr_params = data.concept_teacher, None
    if is_demo:
        render_size = 2 * demo.image_size  # text spotting needs legible letters; the processor resizes
        pool = build_scenes(demo.num_train, image_size=render_size, seed=training.seed,
                            low_complexity_share=demo.noise_share, no_action_share=demo.noise_share,
                            text_share=demo.noise_share)
        held_out = build_scenes(demo.num_eval, image_size=render_size, seed=training.seed + 1)
        image_column, caption_column = "image", "caption"
        names, template = class_names(), CLASS_PROMPT.replace("{color} {shape}", "{}")  # "a photo of a {}"
        eval_info = {"name": "synthetic scenes (demo)", "type": "synthetic-scenes", "split": "held-out"}
        # Small images: OCR at a 1.5x upscale instead of rapidocr's default of 736 px, without the orientation
        # classifier (the letters are upright): several times faster; results.json shows how much text it finds.
        ocr_params = {"Det.limit_side_len": 3 * render_size // 2, "Det.limit_type": "min", "Global.use_cls": False}
        if data.preprocessing_num_workers is None:
            data.preprocessing_num_workers = min(2, os.cpu_count() or 1)
        if teacher is None and data.concept_distillation:
            from demo_teacher import train_demo_teacher

            teacher = train_demo_teacher(demo.image_size, steps=demo.teacher_steps, seed=training.seed)
            data.concept_activation = "sigmoid"  # it is a multi-label colour + shape classifier
    else:
        pool = load_pairs(data, data.train_split)
        image_column, caption_column = resolve_columns(pool, data)
        held_out, names, template = None, None, data.prompt_template
        eval_info = {"name": data.dataset_name or data.dataset_path, "type": data.dataset_name or "local",
                     "split": data.eval_split}
        if data.eval_split:
            held_out = load_pairs(data, data.eval_split)
            if isinstance(held_out, IterableDataset):
                held_out = Dataset.from_list(list(held_out.take(data.max_eval_samples)), features=held_out.features)
            held_out = held_out.select(range(min(len(held_out), data.max_eval_samples)))
            feature = held_out.features.get(data.label_column)
            names = getattr(feature, "names", None)  # a ClassLabel column names its classes

    # Decode in the collator, not in datasets: an unreadable image then costs a counted row, not a worker.
    pool = undecoded(pool, image_column)
    train, cat_report, vocabulary = curate(pool, data, training, image_column, caption_column, teacher, ocr_params)

    if is_demo:
        tokenizer = build_word_tokenizer([*pool[caption_column], *(template.format(name) for name in names)])
        image_processor = CLIPImageProcessor(size={"shortest_edge": demo.image_size},
                                             crop_size={"height": demo.image_size, "width": demo.image_size})
        set_seed(training.seed)  # the same initial weights in every process and every run
        model = DiHTModel(tiny_diht_config(tokenizer, demo.image_size, training, len(vocabulary)))
    else:
        source = model_args.model_name_or_path
        heads = {"concepts": len(vocabulary)} if vocabulary else None
        overrides = dict(hn_nce_alpha=training.hn_nce_alpha, hn_nce_beta=training.hn_nce_beta)
        if heads:
            overrides["concept_head_sizes"] = heads
        set_seed(training.seed)  # random weights (a new model, or new concept heads) equal in every process and run
        if source:
            model = DiHTModel.from_pretrained(source, attn_implementation=model_args.attn_implementation,
                                              **overrides)
        else:
            config = (DiHTConfig.from_preset(model_args.preset, **overrides) if model_args.preset
                      else DiHTConfig.from_pretrained(model_args.config_name, **overrides))
            config._attn_implementation = model_args.attn_implementation
            model = DiHTModel(config)
        tokenizer_source = model_args.tokenizer_name or source
        if tokenizer_source:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        else:  # OpenAI's CLIP BPE, from the open_clip wheel (no download)
            from modeling_diht.convert_diht_original_to_hf import build_tokenizer

            tokenizer = build_tokenizer()
        processor_source = model_args.image_processor_name or source
        if processor_source:
            image_processor = AutoImageProcessor.from_pretrained(processor_source)
        else:
            from modeling_diht.convert_diht_original_to_hf import build_image_processor

            image_processor = build_image_processor(model.config.vision_config.image_size)
    image_size = model.config.vision_config.image_size

    collator = ImageTextCollator(
        tokenizer, image_processor, image_column=image_column, caption_column=caption_column,
        train_transform=diht_train_transform(image_size) if data.train_augmentation else None,
        num_concepts=len(vocabulary) or None, soft_concepts=data.soft_concepts,
    )
    tasks = []
    if held_out is not None:
        tasks = held_out_tasks(held_out, image_column=image_column, caption_column=caption_column,
                               label_column=data.label_column, names=names, template=template, info=eval_info)
    callbacks = []
    if tasks and data.zero_shot_eval_steps:
        callbacks.append(ZeroShotEvaluationCallback(tasks, tokenizer, image_processor,
                                                    eval_steps=data.zero_shot_eval_steps, at_train_end=False))
    trainer = DiHTTrainer(model=model, args=training, train_dataset=train, data_collator=collator,
                          callbacks=callbacks)
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    results = {"train_loss_first": losses[0], "train_loss_last": losses[-1]} if losses else {}
    # Every process evaluates: under ZeRO-3 each forward gathers the weights collectively.
    evaluation = [task.run(trainer.model, tokenizer, image_processor) for task in tasks]
    for record in evaluation:
        if record["task"] == "classification":
            results["zero_shot_top1"] = record["metrics"]["top1"]
            results["chance_top1"] = 1.0 / record["num_classes"]
    results["evaluation"] = evaluation
    results["skipped"] = trainer.skipped_counts
    if cat_report is not None and not isinstance(train, IterableDataset):
        results["cat_report"] = dict(cat_report)
        if is_demo:  # what CAT removed, against the kinds the demo planted
            kinds = pool["kind"]
            kept = train["kind"]
            results["cat_removed_by_kind"] = {k: kinds.count(k) - kept.count(k) for k in KINDS}
            results["cat_pool_by_kind"] = {k: kinds.count(k) for k in KINDS}
    if vocabulary:
        results["concept_vocabulary"] = vocabulary

    output_dir = Path(training.output_dir)
    trainer.save_model(str(output_dir / "model"))  # gathers ZeRO-3 shards; writes on the main process
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir / "model")
        image_processor.save_pretrained(output_dir / "model")
        card = dict(results=evaluation, cat_report=results.get("cat_report"), training_args=training,
                    datasets=[data.dataset_name] if data.dataset_name and not Path(data.dataset_name).exists() else None,
                    base_model=(model_args.model_name_or_path if model_args.model_name_or_path
                                and not Path(model_args.model_name_or_path).exists() else None),
                    license=hub.license)
        if push_to_hub:
            repo_id = training.hub_model_id or output_dir.name
            uploaded = publish(output_dir / "model", repo_id, dry_run=hub.hub_dry_run,
                               private=training.hub_private_repo, token=training.hub_token,
                               revision=training.hub_revision, **card)
            results["hub"] = {"repo_id": repo_id, "dry_run": hub.hub_dry_run,
                              "files": uploaded if hub.hub_dry_run else None}
        else:  # the card goes into the folder anyway: it is what a reader of the checkpoint needs
            write_model_card(output_dir / "model", model_id=training.hub_model_id, training=card.pop("training_args"),
                             **card)
        if losses:
            plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        if "zero_shot_top1" in results:
            print(f"zero-shot top-1 {results['zero_shot_top1']:.1%} vs chance {results['chance_top1']:.1%}; "
                  f"results, curves and model in {output_dir}")
    trainer.accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
