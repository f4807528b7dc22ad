"""Pre-train (or fine-tune for retrieval) a COSMO model: ITC + ITM + MLM on GRIT's grouped mini-batches, with
efficient connection mining (ECM) and the smoothed ITC (S-ITC).

Byun, Kim and Moon, "MAFA: Managing False Negatives for Vision-Language Pre-training" (COSMO in v1), CVPR 2024,
https://arxiv.org/abs/2312.06112; GRIT-VLP, https://arxiv.org/abs/2208.04060; ALBEF, https://arxiv.org/abs/2107.07651.

    python examples/pretrain_cosmo.py                  # the embedded demo: CPU, a few minutes, offline
    accelerate launch examples/pretrain_cosmo.py       # the same on every process of an accelerate config
    accelerate launch --config_file examples/configs/deepspeed_zero2.yaml examples/pretrain_cosmo.py \\
        --dataset_name my/pairs --text_model_name_or_path bert-base-uncased \\
        --vision_model_name_or_path facebook/deit-base-patch16-224 --discriminator my/cosmo-checkpoint \\
        --per_device_train_batch_size 128 --num_train_epochs 20 --bf16 ...
    python examples/pretrain_cosmo.py --task retrieval_finetune --model_name_or_path outputs/pretrain_cosmo/model \\
        --dataset_name my/coco-karpathy --eval_split test ...

With no dataset it renders scenes with **planted false negatives**: every image has two captions, and a caption names
only its scene's colour and shape, so it describes every other scene of that class equally well. It first trains a
small discriminator (a COSMO model on separate scenes, told which images match which captions; it stands in for the
strong pre-trained ITM model, such as BLIP, that ECM needs) and saves it, then pre-trains a COSMO model with GRIT +
ECM + S-ITC, and ends with retrieval on held-out scenes, by ITC and ITM re-ranked, and zero-shot classification.

It writes to `--output_dir`: `results.json` (retrieval R@1/5/10 against chance, the train loss first and last, the
ECM precision and recall against the planted ground truth, the counts of every ECM class), `training_curves.png`,
`model/` (a checkpoint `AutoModel` loads, with its model card `README.md`) and, in the demo, `discriminator/`.

This is a sibling of `examples/pretrain.py` rather than a `--recipe` flag of it: the two recipes share the data
arguments (`image_text_data.TrainingDataArguments`: the same `--dataset_name`, `--train_files`, `--dataset_path`,
`--streaming` and column options) and the publishing arguments, but their model, curation and training arguments
differ, and one parser with both sets would offer options that one recipe silently ignores.

Data: as `examples/pretrain.py`, plus `--image_id_column` (rows sharing an image id are positives of each other and
never negatives; COCO-style data with several captions per image needs it). GRIT's sampler and the discriminator's
cache need a map-style dataset: with `--streaming`, pass `--grouped_batches false`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, IterableDataset
from transformers import HfArgumentParser, set_seed

from evaluation import ClassificationTask, RetrievalTask
from evaluation.itm_rerank import ITMRescorer
from hub_cards import PublishArguments, hub_name, publish, write_model_card
from image_text_data import (
    EmptyDatasetError,
    TrainingDataArguments,
    apply_caption_policy,
    resolve_columns,
    undecoded,
)
from image_text_data.demo import CLASS_TEMPLATE, build_grouped_scenes, build_wordpiece_tokenizer, class_names
from modeling_cosmo import CosmoConfig, CosmoForPreTraining, cosmo_image_processor
from trainers import (
    CosmoTrainer,
    CosmoTrainingArguments,
    ImageTextCollator,
    MaskedCaptions,
    cosmo_train_transform,
    mining_quality,
    plot_training_curves,
    tiny_cosmo_config,
    train_demo_discriminator,
)
from trainers.loading import LoadError, load_image_processor, load_pretrained_model, load_tokenizer

logger = logging.getLogger("pretrain_cosmo")


@dataclass
class CosmoModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "A COSMO checkpoint (Hub id or folder; e.g. a converted ALBEF/GRIT-VLP/MAFA one) to start from."})
    text_model_name_or_path: str | None = field(default=None, metadata={
        "help": "A BERT checkpoint for the text and fusion layers (ALBEF's initialisation), with "
                "--vision_model_name_or_path."})
    vision_model_name_or_path: str | None = field(default=None, metadata={
        "help": "A ViT/DeiT checkpoint for the image encoder, with --text_model_name_or_path."})
    preset: str | None = field(default=None, metadata={"help": "A COSMO architecture, e.g. "
                                                               "cosmo_vitb16_bert_base_256px (random weights)."})
    config_name: str | None = field(default=None, metadata={"help": "A COSMO config.json (random weights)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the text checkpoint's)."})
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor (default: COSMO's "
                                                                             "for the model's image size)."})
    allow_missing_weights: bool = field(default=False, metadata={
        "help": "Train weights the checkpoint lacks from their initialisation instead of stopping."})


@dataclass
class CosmoDataArguments:
    image_id_column: str = field(default="image_id", metadata={
        "help": "Integer column naming each row's image (used when the data has it): pairs of one image are "
                "positives of each other, never negatives."})
    rerank_k: int = field(default=128, metadata={
        "help": "Retrieval: candidates re-ranked by ITM per query (ALBEF/COSMO: 128 on Flickr30k, 256 on COCO)."})


@dataclass
class CosmoDemoArguments:
    num_train_images: int = field(default=600, metadata={"help": "Demo: training scenes (two captions each)."})
    num_discriminator_images: int = field(default=600, metadata={"help": "Demo: the discriminator's scenes."})
    discriminator_epochs: float = field(default=30, metadata={"help": "Demo: the discriminator's training epochs."})
    num_eval_images: int = field(default=200, metadata={"help": "Demo: held-out scenes for zero-shot classification."})
    image_size: int = field(default=32, metadata={"help": "Demo: image side in pixels."})


def demo_defaults() -> list[str]:
    """Training arguments of the embedded demo (command-line arguments override them)."""
    return ["--output_dir", "outputs/pretrain_cosmo", "--per_device_train_batch_size", "32", "--num_train_epochs",
            "10", "--learning_rate", "1e-3", "--weight_decay", "0.02", "--warmup_steps", "20", "--logging_steps", "10",
            "--lr_scheduler_type", "cosine", "--save_strategy", "no", "--report_to", "none", "--seed", "0",
            "--ecm_history", "1000000", "--dataloader_pin_memory", str(torch.cuda.is_available()).lower()]


def build_model(model_args: CosmoModelArguments) -> CosmoForPreTraining:
    """The model to train: a checkpoint, BERT + ViT warm start, a preset or a config (in that order of preference)."""
    if model_args.model_name_or_path:  # every weight from the checkpoint, or a message naming what is missing
        return load_pretrained_model(CosmoForPreTraining, model_args.model_name_or_path, what="--model_name_or_path",
                                     allow_missing_weights=model_args.allow_missing_weights)
    if model_args.text_model_name_or_path or model_args.vision_model_name_or_path:
        if not (model_args.text_model_name_or_path and model_args.vision_model_name_or_path):
            raise ValueError("a warm start needs both --text_model_name_or_path and --vision_model_name_or_path")
        config = CosmoConfig.from_preset(model_args.preset) if model_args.preset else None
        return CosmoForPreTraining.from_text_vision_pretrained(
            model_args.text_model_name_or_path, model_args.vision_model_name_or_path, config=config)
    if model_args.preset:
        return CosmoForPreTraining(CosmoConfig.from_preset(model_args.preset))
    if model_args.config_name:
        return CosmoForPreTraining(CosmoConfig.from_pretrained(model_args.config_name))
    raise ValueError("with your own data, give a model: --model_name_or_path, --text_model_name_or_path with "
                     "--vision_model_name_or_path, --preset or --config_name")


def with_index(dataset):
    """The dataset with an `index` column (its row numbers): the grouped sampler and the discriminator's cache key
    every pair by it."""
    if "index" in (dataset.column_names or []):
        return dataset
    if isinstance(dataset, IterableDataset):
        return dataset.map(lambda row, i: {"index": i}, with_indices=True)
    return dataset.add_column("index", list(range(len(dataset))))


def one_row_per_image(scenes: Dataset) -> Dataset:
    """A retrieval gallery: the rows of each `image_id` as one image with the list of its captions."""
    images, captions, labels = {}, {}, {}
    for row in scenes:
        key = row["image_id"]
        images.setdefault(key, row["image"])
        captions.setdefault(key, []).append(row["caption"])
        labels[key] = row["label"]
    keys = sorted(images)
    return Dataset.from_dict({"image": [images[k] for k in keys], "caption": [captions[k] for k in keys],
                              "label": [labels[k] for k in keys]})


def chance_recall(num_images: int, captions_per_image: int, k: int) -> dict[str, float]:
    """Recall@k of a random ranking: text→image k / N; image→text: 1 - C(T - c, k) / C(T, k) for c captions each."""
    texts = num_images * captions_per_image
    return {f"text_to_image_recall@{k}": min(1.0, k / num_images),
            f"image_to_text_recall@{k}": 1.0 - math.comb(texts - captions_per_image, k) / math.comb(texts, k)}


def main(argv: list[str] | None = None) -> dict:
    # 1. Arguments: the demo's defaults first, so that the command line overrides them.
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((CosmoModelArguments, TrainingDataArguments, CosmoDataArguments, CosmoDemoArguments,
                               PublishArguments, CosmoTrainingArguments))
    model_args, data, cosmo_data, demo, hub, training = parser.parse_args_into_dataclasses(
        args=demo_defaults() + argv)
    push_to_hub, training.push_to_hub = training.push_to_hub or hub.hub_dry_run, False  # one commit at the end
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training.should_log else logging.WARNING)
    is_demo = not data.has_source
    output_dir = Path(training.output_dir)
    pretraining = training.task == "pretrain"

    # 2. Data, tokenizer, image processor and model.
    held_out, names, template = None, None, data.prompt_template
    if is_demo:
        render_size = 2 * demo.image_size  # rendered at twice the model's input, as examples/pretrain.py's scenes
        train = build_grouped_scenes(demo.num_train_images, image_size=render_size, seed=training.seed)
        image_column, caption_column, image_id_column = "image", "caption", "image_id"
        gallery = one_row_per_image(build_grouped_scenes(len(class_names()), captions_per_image=3,
                                                         image_size=render_size, seed=training.seed + 1,
                                                         classes=list(range(len(class_names())))))
        classification = build_grouped_scenes(demo.num_eval_images, captions_per_image=1,
                                              image_size=render_size, seed=training.seed + 3)
        names, template = class_names(), CLASS_TEMPLATE
        tokenizer = build_wordpiece_tokenizer([*train["caption"], *(template.format(name) for name in names)])
        image_processor = cosmo_image_processor(demo.image_size)
        if pretraining and training.connection_mining and not training.discriminator:
            scenes = undecoded(build_grouped_scenes(demo.num_discriminator_images, image_size=render_size,
                                                    seed=training.seed + 2), "image")
            training.discriminator = str(train_demo_discriminator(
                scenes, output_dir, tokenizer, image_processor, image_size=demo.image_size,
                epochs=demo.discriminator_epochs, batch_size=training.per_device_train_batch_size,
                learning_rate=training.learning_rate, weight_decay=training.weight_decay, seed=training.seed,
                disable_tqdm=training.disable_tqdm, logging_steps=training.logging_steps, use_cpu=training.use_cpu,
                dataloader_pin_memory=training.dataloader_pin_memory))
        set_seed(training.seed)
        model = CosmoForPreTraining(tiny_cosmo_config(tokenizer, demo.image_size))
        eval_info = {"name": "synthetic scenes (demo)", "type": "synthetic-scenes", "split": "held-out"}
    else:
        try:
            train = data.load(data.train_split)
        except EmptyDatasetError as error:  # e.g. CAT kept nothing: say so, with its report, instead of a traceback
            raise SystemExit(f"error: {error}") from None
        image_column, caption_column = resolve_columns(train, data.image_column, data.caption_column)
        # One caption string per pair (COCO-style lists exploded into pairs sharing an `image_id`, by default).
        with training.main_process_first(desc="captions"):
            train = apply_caption_policy(train, caption_column, data.caption_list, seed=training.seed,
                                         num_proc=data.preprocessing_num_workers)
        image_id_column = cosmo_data.image_id_column if cosmo_data.image_id_column in (train.column_names or []) \
            else None
        if isinstance(train, IterableDataset) and pretraining and training.grouped_batches:
            raise ValueError(f"GRIT's grouped batches index a map-style dataset; {data.source_name} is streamed: "
                             "pass --grouped_batches false, or drop --streaming")
        gallery = classification = None
        if data.eval_split:
            held_out = data.load(data.eval_split)
            if isinstance(held_out, IterableDataset):
                held_out = Dataset.from_list(list(held_out.take(data.max_eval_samples)), features=held_out.features)
            held_out = held_out.select(range(min(len(held_out), data.max_eval_samples)))
            gallery = held_out
            names = getattr(held_out.features.get(data.label_column), "names", None)  # a ClassLabel names classes
            classification = held_out if names else None
        set_seed(training.seed)
        model = build_model(model_args)
        tokenizer_source = (model_args.tokenizer_name or model_args.model_name_or_path
                            or model_args.text_model_name_or_path)
        if not tokenizer_source:
            raise ValueError("no tokenizer: pass --tokenizer_name (a BERT tokenizer) with --preset or --config_name")
        tokenizer = load_tokenizer(tokenizer_source)
        processor_source = model_args.image_processor_name or model_args.model_name_or_path
        image_processor = (load_image_processor(processor_source) if processor_source
                           else cosmo_image_processor(model.config.vision_config.image_size))
        eval_info = {"name": data.source_name, "type": data.dataset_name or "local", "split": data.eval_split}
    train = with_index(undecoded(train, image_column))
    if image_id_column and image_id_column != "image_id":
        train = train.rename_column(image_id_column, "image_id")

    # 3. Batches: ALBEF's crop, and (pre-training) the masked copies of the captions for MLM.
    add_ons = [MaskedCaptions(tokenizer, model.config.mlm_probability, seed=training.seed)] if pretraining else []
    collator = ImageTextCollator(
        tokenizer, image_processor, image_column=image_column, caption_column=caption_column,
        train_transform=cosmo_train_transform(model.config.vision_config.image_size) if data.train_augmentation
        else None, add_ons=add_ons, top_up=not (pretraining and training.grouped_batches), seed=training.seed)

    # 4. Evaluation: retrieval by ITC and ITM re-ranked (the student's own ITM head), zero-shot classification.
    tasks = []
    if gallery is not None:
        rescorer = ITMRescorer(model, tokenizer, image_processor, max_length=tokenizer.model_max_length)
        tasks.append(RetrievalTask(gallery, image_column=image_column, caption_column=caption_column,
                                   dataset_info=eval_info, rescorer=rescorer, rerank_k=cosmo_data.rerank_k))
    if classification is not None and names:
        tasks.append(ClassificationTask(classification, class_names=names, templates=[template],
                                        image_column=image_column, label_column=data.label_column,
                                        dataset_info=eval_info))

    # 5. Training, then the final evaluation.
    trainer = CosmoTrainer(model=model, args=training, train_dataset=train, data_collator=collator,
                           eval_tasks=tasks, image_processor=image_processor)
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    if tasks:
        trainer.evaluate()

    # 6. Results: losses, retrieval against chance, what ECM found (against the planted ground truth in the demo).
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    results: dict = {"train_loss_first": losses[0], "train_loss_last": losses[-1]} if losses else {}
    for record in trainer.eval_records:
        if record.task == "retrieval":
            results["retrieval"] = dict(record.metrics)
            if is_demo:
                results["retrieval_chance"] = {key: value for k in (1, 5, 10) for key, value in
                                               chance_recall(record.num_images, 3, k).items()}
        elif record.task == "classification":
            results["zero_shot_top1"] = record.metrics["top1"]
            results["chance_top1"] = 1.0 / record.num_classes
    if trainer.miner is not None:
        results["ecm"] = {"settings": trainer.miner.state(), "scored_pairs": trainer.ecm_counts}
        if is_demo and trainer.miner.records:
            labels = train["label"]
            results["ecm"]["quality"] = mining_quality(trainer.miner.records,
                                                       lambda image, text: labels[image] == labels[text])
    results["evaluation"] = [record.to_dict() for record in trainer.eval_records]
    results["skipped"] = trainer.skipped_counts

    # 7. The checkpoint folder with its model card, and the Hub push (or its dry run).
    trainer.save_model(str(output_dir / "model"))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir / "model")
        image_processor.save_pretrained(output_dir / "model")
        card = dict(results=results["evaluation"], loss_config=trainer.loss_config(), license=hub.license,
                    datasets=[data.dataset_name] if hub_name(data.dataset_name) else None,
                    base_model=hub_name(model_args.model_name_or_path, model_args.text_model_name_or_path))
        if push_to_hub:
            repo_id = training.hub_model_id or output_dir.name
            uploaded = publish(output_dir / "model", repo_id, dry_run=hub.hub_dry_run, training_args=training,
                               private=training.hub_private_repo, token=training.hub_token,
                               revision=training.hub_revision, **card)
            results["hub"] = {"repo_id": repo_id, "dry_run": hub.hub_dry_run,
                              "files": uploaded if hub.hub_dry_run else None}
        else:
            write_model_card(output_dir / "model", model_id=training.hub_model_id, training=training, **card)
        if losses:
            plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png",
                                 title="COSMO pre-training" if pretraining else "COSMO retrieval fine-tuning",
                                 exclude=trainer.counters)
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps({key: value for key, value in results.items() if key != "evaluation"}, indent=2))
        if "retrieval" in results:
            print(f"text→image R@1 {results['retrieval']['text_to_image_recall@1']:.1%} by ITC, "
                  f"{results['retrieval'].get('reranked_text_to_image_recall@1', float('nan')):.1%} ITM re-ranked; "
                  f"results, curves and model in {output_dir}")
    trainer.accelerator.end_training()
    return results


if __name__ == "__main__":
    try:
        main()
    except LoadError as error:  # a file or name the user gave that cannot be loaded: its message says what to do
        raise SystemExit(f"error: {error}") from None
