"""Pre-train a DiHT model: CAT filtering, concept distillation and HN-NCE over the global batch.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280.

    python examples/pretrain.py                        # the embedded demo: CPU, a few minutes, offline
    accelerate launch examples/pretrain.py             # the same on every process of an accelerate config
    accelerate launch --config_file examples/configs/deepspeed_zero2.yaml examples/pretrain.py \\
        --dataset_name laion/some-pairs --preset diht_vitb16_224px --bf16 --max_steps 100000 ...

With no dataset it builds a pool of rendered shapes whose captions mix good pairs with pairs CAT must remove,
filters the pool with CAT and labels concepts with a small frozen teacher it trains itself (`curation.curate`),
trains a tiny DiHT with `trainers.DiHTTrainer`, and evaluates zero-shot classification and retrieval on held-out
images against chance (`evaluation` tasks inside `Trainer.evaluate`; `--eval_strategy steps --eval_steps N` also
evaluates during training, so `--metric_for_best_model eval_classification_top1` and early stopping work). It writes
to `--output_dir`: `results.json` (metrics, evaluation records, CAT report), `training_curves.png`, `model/` (a
checkpoint that `AutoModel` and `pipeline("zero-shot-image-classification")` load, with its model card `README.md`
from `hub_cards`) and the Trainer's checkpoints when `--save_strategy` asks. `--push_to_hub --hub_model_id me/name`
uploads `model/` with its card in one commit at the end (the Trainer's own push at every save is turned off);
`--hub_dry_run` lists the files instead.

Data: a Hub name or local folder (`--dataset_name`), files (`--train_files`, `.tar` shards as img2dataset writes
them are read as webdataset), a `save_to_disk` folder (`--dataset_path`), optionally `--streaming`. Model: a
checkpoint (`--model_name_or_path`, DiHT or CLIP, for warm starts; weights it lacks stop the run unless
`--allow_missing_weights`, new concept heads excepted), a preset (`--preset`) or a config file. A checkpoint,
tokenizer, image processor, Trainer checkpoint (`--resume_from_checkpoint`) or timm teacher that cannot be loaded
stops the command with one line, `error: ...`, naming the file and what to do (`trainers.loading`).
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
from transformers import CLIPImageProcessor, HfArgumentParser, set_seed

from curation import curate
from evaluation import ClassificationTask, RetrievalTask
from hub_cards import PublishArguments, hub_name, publish, write_model_card
from image_text_data import (
    EmptyDatasetError,
    TrainingDataArguments,
    apply_caption_policy,
    resolve_columns,
    undecoded,
)
from image_text_data.demo import (
    CLASS_TEMPLATE,
    KINDS,
    build_scenes,
    build_word_tokenizer,
    class_names,
    train_demo_teacher,
)
from modeling_diht import DiHTConfig, DiHTModel
from modeling_diht.processing_diht import build_image_processor, build_tokenizer
from trainers import (
    DiHTTrainer,
    DiHTTrainingArguments,
    diht_collator,
    diht_train_transform,
    plot_training_curves,
    tiny_diht_config,
)
from trainers.loading import (
    LoadError,
    load_image_processor,
    load_pretrained_model,
    load_timm_model,
    load_tokenizer,
)

logger = logging.getLogger("pretrain")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "DiHT or CLIP checkpoint (Hub id or folder) to start from."})
    preset: str | None = field(default=None, metadata={"help": "A DiHT architecture, e.g. diht_vitb16_224px."})
    config_name: str | None = field(default=None, metadata={"help": "A DiHT config.json to build a random model."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the checkpoint's)."})
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor (default: ditto)."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager, sdpa or flash_attention_2."})
    allow_missing_weights: bool = field(default=False, metadata={
        "help": "Warm start: train weights the checkpoint lacks from random values instead of stopping (new concept "
                "heads never count as missing)."})


@dataclass
class CurationArguments:
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


@dataclass
class DemoArguments:
    num_train: int = field(default=2000, metadata={"help": "Demo: pairs in the raw pool before CAT."})
    num_eval: int = field(default=500, metadata={"help": "Demo: held-out pairs."})
    image_size: int = field(default=32, metadata={"help": "Demo: model input size (scenes render at 2x)."})
    noise_share: float = field(default=0.1, metadata={"help": "Demo: share of each kind of pair CAT removes."})
    teacher_steps: int = field(default=250, metadata={"help": "Demo: training steps of the concept teacher."})


def demo_defaults() -> list[str]:
    """Training arguments of the embedded demo (command-line arguments override them)."""
    return ["--output_dir", "outputs/pretrain", "--per_device_train_batch_size", "64", "--max_steps", "400",
            "--learning_rate", "1e-3", "--weight_decay", "0.1", "--warmup_steps", "40", "--logging_steps", "20",
            "--lr_scheduler_type", "cosine", "--save_strategy", "no", "--report_to", "none", "--seed", "0",
            "--dataloader_pin_memory", str(torch.cuda.is_available()).lower()]


def main(argv: list[str] | None = None) -> dict:
    # 1. Arguments: the demo's defaults first, so that the command line overrides them.
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, TrainingDataArguments, CurationArguments, DemoArguments,
                               PublishArguments, DiHTTrainingArguments))
    model_args, data, curation, demo, hub, training = parser.parse_args_into_dataclasses(args=demo_defaults() + argv)
    # One commit with the final model and its card (hub_cards.publish) instead of the Trainer's push at every save.
    push_to_hub, training.push_to_hub = training.push_to_hub or hub.hub_dry_run, False
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training.should_log else logging.WARNING)
    is_demo = not data.has_source

    # 2. Data: the user's pairs (and held-out split), or the demo's rendered scenes.
    teacher, ocr_params, held_out, names, template = curation.concept_teacher, None, None, None, data.prompt_template
    if isinstance(teacher, str) and curation.concept_distillation:  # loaded now: a missing one fails before CAT runs
        teacher = load_timm_model(teacher)
    if is_demo:
        render_size = 2 * demo.image_size  # text spotting needs legible letters; the processor resizes
        pool = build_scenes(demo.num_train, image_size=render_size, seed=training.seed,
                            low_complexity_share=demo.noise_share, no_action_share=demo.noise_share,
                            text_share=demo.noise_share)
        held_out = build_scenes(demo.num_eval, image_size=render_size, seed=training.seed + 1)
        image_column, caption_column = "image", "caption"
        names, template = class_names(), CLASS_TEMPLATE
        eval_info = {"name": "synthetic scenes (demo)", "type": "synthetic-scenes", "split": "held-out"}
        # Small images: OCR at a 1.5x upscale instead of rapidocr's default of 736 px, without the orientation
        # classifier (the letters are upright): several times faster; results.json shows how much text it finds.
        ocr_params = {"Det.limit_side_len": 3 * render_size // 2, "Det.limit_type": "min", "Global.use_cls": False}
        if data.preprocessing_num_workers is None:
            data.preprocessing_num_workers = min(2, os.cpu_count() or 1)
        if teacher is None and curation.concept_distillation:
            teacher = train_demo_teacher(demo.image_size, steps=demo.teacher_steps, seed=training.seed)
            curation.concept_activation = "sigmoid"  # it is a multi-label colour + shape classifier
    else:
        try:
            pool = data.load(data.train_split)
        except EmptyDatasetError as error:  # e.g. CAT kept nothing: say so, with its report, instead of a traceback
            raise SystemExit(f"error: {error}") from None
        image_column, caption_column = resolve_columns(pool, data.image_column, data.caption_column)
        # One caption string per pair before anything else (lists exploded or picked, other types refused).
        with training.main_process_first(desc="captions"):
            pool = apply_caption_policy(pool, caption_column, data.caption_list, seed=training.seed,
                                        num_proc=data.preprocessing_num_workers)
        eval_info = {"name": data.source_name, "type": data.dataset_name or "local", "split": data.eval_split}
        if data.eval_split:
            held_out = data.load(data.eval_split)
            if isinstance(held_out, IterableDataset):
                held_out = Dataset.from_list(list(held_out.take(data.max_eval_samples)), features=held_out.features)
            held_out = held_out.select(range(min(len(held_out), data.max_eval_samples)))
            names = getattr(held_out.features.get(data.label_column), "names", None)  # a ClassLabel names classes

    # 3. Curation: CAT, then the teacher's concepts (images stay undecoded bytes: a corrupt one is a counted row).
    curated = curate(
        undecoded(pool, image_column), image_column=image_column, caption_column=caption_column,
        cat=curation.cat_filter, teacher=teacher, concepts=curation.concept_distillation,
        cat_options={"min_complexity": curation.cat_min_complexity, "min_actions": curation.cat_min_actions,
                     "text_spotting": curation.cat_text_spotting, "ocr_params": ocr_params},
        concept_options={"top_k": curation.concept_top_k, "return_scores": curation.soft_concepts,
                         "activation": curation.concept_activation},
        num_proc=data.preprocessing_num_workers, main_process_first=training.main_process_first,
    )
    train, vocabulary = curated.dataset, curated.vocabulary

    # 4. Model, tokenizer and image processor (the same random weights in every process).
    set_seed(training.seed)
    if is_demo:
        tokenizer = build_word_tokenizer([*pool[caption_column], *(template.format(name) for name in names)])
        image_processor = CLIPImageProcessor(size={"shortest_edge": demo.image_size},
                                             crop_size={"height": demo.image_size, "width": demo.image_size})
        model = DiHTModel(tiny_diht_config(tokenizer, demo.image_size, num_concepts=len(vocabulary),
                                           hn_nce_alpha=training.hn_nce_alpha, hn_nce_beta=training.hn_nce_beta))
    else:
        source = model_args.model_name_or_path
        overrides = dict(hn_nce_alpha=training.hn_nce_alpha, hn_nce_beta=training.hn_nce_beta)
        if vocabulary:
            overrides["concept_head_sizes"] = {"concepts": len(vocabulary)}
        if source:  # every weight from the checkpoint, except new concept heads (trainers.loading, docs/choices.md)
            model = load_pretrained_model(DiHTModel, source, what="--model_name_or_path",
                                          allow_missing_weights=model_args.allow_missing_weights,
                                          attn_implementation=model_args.attn_implementation, **overrides)
        else:
            config = (DiHTConfig.from_preset(model_args.preset, **overrides) if model_args.preset
                      else DiHTConfig.from_pretrained(model_args.config_name, **overrides))
            config._attn_implementation = model_args.attn_implementation
            model = DiHTModel(config)
        tokenizer_source = model_args.tokenizer_name or source
        what = "--tokenizer_name" if model_args.tokenizer_name else "tokenizer of --model_name_or_path"
        tokenizer = load_tokenizer(tokenizer_source, what=what) if tokenizer_source else build_tokenizer()
        processor_source = model_args.image_processor_name or source
        what = ("--image_processor_name" if model_args.image_processor_name
                else "image processor of --model_name_or_path")
        image_processor = (load_image_processor(processor_source, what=what) if processor_source
                           else build_image_processor(model.config.vision_config.image_size))

    # 5. Batches and the zero-shot tasks (retrieval on the held-out images whose caption is unique: with one relevant
    #    caption per image, a caption shared by several images would count its twins as misses).
    collator = diht_collator(
        tokenizer, image_processor, image_column=image_column, caption_column=caption_column,
        caption_list=data.caption_list,
        train_transform=diht_train_transform(model.config.vision_config.image_size) if data.train_augmentation
        else None, num_concepts=len(vocabulary) or None, soft_concepts=curation.soft_concepts)
    tasks = []
    if held_out is not None:
        if names:
            tasks.append(ClassificationTask(held_out, class_names=names, templates=[template],
                                            image_column=image_column, label_column=data.label_column,
                                            dataset_info=eval_info))
        counts = Counter(held_out[caption_column])
        unique = [i for i, caption in enumerate(held_out[caption_column]) if counts[caption] == 1]
        tasks.append(RetrievalTask(held_out.select(unique), image_column=image_column, caption_column=caption_column,
                                   dataset_info=eval_info))

    # 6. Training, then the final evaluation (every process: under ZeRO-3 each forward gathers the weights).
    trainer = DiHTTrainer(model=model, args=training, train_dataset=train, data_collator=collator, eval_tasks=tasks,
                          image_processor=image_processor)
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    if tasks:
        trainer.evaluate()
    evaluation = [record.to_dict() for record in trainer.eval_records]

    # 7. Results: losses, metrics against chance, what CAT removed (of each planted kind, in the demo).
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    results = {"train_loss_first": losses[0], "train_loss_last": losses[-1]} if losses else {}
    for record in trainer.eval_records:
        if record.task == "classification":
            results["zero_shot_top1"] = record.metrics["top1"]
            results["chance_top1"] = 1.0 / record.num_classes
    results["evaluation"] = evaluation
    results["skipped"] = trainer.skipped_counts
    if curated.cat_report is not None and not isinstance(train, IterableDataset):
        results["cat_report"] = dict(curated.cat_report)
        if is_demo:
            kinds, kept = pool["kind"], train["kind"]
            results["cat_removed_by_kind"] = {k: kinds.count(k) - kept.count(k) for k in KINDS}
            results["cat_pool_by_kind"] = {k: kinds.count(k) for k in KINDS}
    if vocabulary:
        results["concept_vocabulary"] = vocabulary

    # 8. The checkpoint folder with its model card, and the Hub push (or its dry run).
    output_dir = Path(training.output_dir)
    trainer.save_model(str(output_dir / "model"))  # gathers ZeRO-3 shards; writes on the main process
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir / "model")
        image_processor.save_pretrained(output_dir / "model")
        card = dict(results=evaluation, cat_report=results.get("cat_report"), loss_config=trainer.loss_config(),
                    datasets=[data.dataset_name] if hub_name(data.dataset_name) else None,
                    base_model=hub_name(model_args.model_name_or_path), license=hub.license)
        if push_to_hub:
            repo_id = training.hub_model_id or output_dir.name
            uploaded = publish(output_dir / "model", repo_id, dry_run=hub.hub_dry_run, training_args=training,
                               private=training.hub_private_repo, token=training.hub_token,
                               revision=training.hub_revision, **card)
            results["hub"] = {"repo_id": repo_id, "dry_run": hub.hub_dry_run,
                              "files": uploaded if hub.hub_dry_run else None}
        else:  # the card goes into the folder anyway: it is what a reader of the checkpoint needs
            write_model_card(output_dir / "model", model_id=training.hub_model_id, training=training, **card)
        if losses:
            plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png",
                                 title="DiHT pre-training", exclude=trainer.counters)
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        if "zero_shot_top1" in results:
            print(f"zero-shot top-1 {results['zero_shot_top1']:.1%} vs chance {results['chance_top1']:.1%}; "
                  f"results, curves and model in {output_dir}")
    trainer.accelerator.end_training()
    return results


if __name__ == "__main__":
    try:
        main()
    except LoadError as error:  # a file or name the user gave that cannot be loaded: its message says what to do
        raise SystemExit(f"error: {error}") from None
