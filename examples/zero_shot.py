"""Zero-shot evaluation of a DiHT, COSMO or CLIP checkpoint with the protocols their papers report.

DiHT (arXiv 2301.02280): classification with prompt ensembles, retrieval by embedding similarity. COSMO (arXiv
2312.06112, after ALBEF, arXiv 2107.07651): retrieval by ITC, then the top `--rerank_k` candidates of every query
re-ranked by the image-text matching head; both recalls are reported.

    python examples/zero_shot.py --model_name_or_path org/diht-b16 --dataset_name imagenet-1k --split validation \\
        --class_names openai_imagenet --templates openai_imagenet            # top-1/top-5, 80 prompt templates
    python examples/zero_shot.py --model_name_or_path org/diht-b16 --task retrieval --dataset_name my/coco-5k \\
        --split test --caption_column captions --caption_template "a photo of {}."   # R@1/5/10, both directions
    python examples/zero_shot.py --model_name_or_path org/cosmo --task retrieval --dataset_name my/coco-5k \
        --split test --caption_column captions --rerank_k 256                  # ITC, then ITM re-ranking

The data options are every command's (`image_text_data.DataSourceArguments`): a Hub name or a local folder of data
files, shards or images (`--dataset_name`; an image folder has one sub-folder per class), a `save_to_disk` folder
(`--dataset_path`) or files (`--train_files`). Classification needs an image and an integer label column (class
names from its `ClassLabel`, `--class_names` or a file); retrieval needs an image and a caption column holding one
caption or a list of captions per image.

With no data it evaluates the embedded demo's checkpoint (`outputs/pretrain/model`, trained first by
`examples/pretrain.py` if it is missing) on freshly rendered scenes: classification over the 20 colour × shape classes
and retrieval of their captions.

It writes to `--output_dir`: `results.json` (one record per task: metrics, protocol, data) and, per task, a PNG of
sample queries with their top-k results and scores (`<task>_retrievals.png`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, HfArgumentParser

import modeling_diht  # noqa: F401  (registers DiHT with the Auto classes)
from evaluation import (
    ClassificationTask,
    LazyImages,
    RetrievalTask,
    captions_per_image,
    plot_retrievals,
    resolve_templates,
    sample_retrievals,
)
from evaluation.itm_rerank import ITMRescorer
from image_text_data import DataSourceArguments, resolve_columns, resolve_image_column
from image_text_data.demo import CLASS_TEMPLATE, DEMO_CHECKPOINT, build_scenes, class_names, ensure_demo_checkpoint
from modeling_cosmo import CosmoForImageTextRetrieval


@dataclass
class ZeroShotArguments:
    model_name_or_path: str = field(default=DEMO_CHECKPOINT, metadata={
        "help": "a DiHT or CLIP checkpoint (Hub id or folder with tokenizer and image processor)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "load DiHT repos without this package"})
    task: str = field(default="classification", metadata={"help": "classification | retrieval"})
    split: str = field(default="validation", metadata={"help": "the split to evaluate on"})
    label_column: str = field(default="label", metadata={"help": "the integer class column (classification)"})
    class_names: str | None = field(default=None, metadata={
        "help": "a file with one class name per line, or 'openai_imagenet' (OpenAI's curated ImageNet names, from "
                "open_clip); default: the label column's ClassLabel names"})
    templates: str = field(default="openai_imagenet", metadata={
        "help": "openai_imagenet (the 80 templates) | simple | none | a file with one template per line"})
    caption_template: str | None = field(default=None, metadata={
        "help": "wrap every caption, e.g. 'a photo of {}.' (the DiHT retrieval protocol)"})
    rerank_k: int = field(default=0, metadata={
        "help": "retrieval: re-rank the top k candidates of every query by the model's image-text matching head "
                "(a COSMO checkpoint; ALBEF/COSMO use 256 on COCO, 128 on Flickr30k); 0: similarity only"})
    batch_size: int = 64
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers that decode and preprocess images"})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16 weights"})
    output_dir: str = "outputs/zero_shot"
    plot_queries: int = field(default=6, metadata={"help": "queries drawn in the PNG (0: no PNG)"})
    plot_k: int = field(default=5, metadata={"help": "results per drawn query"})
    seed: int = 0


def read_class_names(spec: str | None) -> list[str] | None:
    """Class names from a file (one per line), or OpenAI's curated ImageNet names from the open_clip wheel."""
    if spec is None:
        return None
    if spec == "openai_imagenet":
        try:
            from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
        except ImportError as error:
            raise SystemExit("--class_names openai_imagenet reads the names from open_clip: pip install "
                             "open_clip_torch") from error
        return list(IMAGENET_CLASSNAMES)
    return [line.strip() for line in Path(spec).read_text(encoding="utf-8").splitlines() if line.strip()]


def demo_tasks(seed: int) -> list[ClassificationTask | RetrievalTask]:
    """Fresh scenes of the embedded demo (a seed its training never used): both tasks."""
    scenes = build_scenes(240, image_size=128, seed=1000 + seed)
    captions = scenes["caption"]
    unique = [i for i, caption in enumerate(captions) if captions.count(caption) == 1]  # one relevant text per image
    info = {"name": "synthetic scenes (demo)", "type": "synthetic-scenes", "split": "test"}
    return [ClassificationTask(scenes, class_names=class_names(), templates=[CLASS_TEMPLATE], dataset_info=info),
            RetrievalTask(scenes.select(unique), dataset_info=info)]


def build_task(args: ZeroShotArguments, data: DataSourceArguments, rescorer=None) -> ClassificationTask | RetrievalTask:
    dataset = data.load(args.split)
    info = {"name": data.source_name, "type": data.dataset_name or "local", "split": args.split}
    if data.dataset_config_name:
        info["config"] = data.dataset_config_name
    if args.task == "classification":
        return ClassificationTask(dataset, class_names=read_class_names(args.class_names),
                                  templates=resolve_templates(args.templates),
                                  image_column=resolve_image_column(dataset, data.image_column),
                                  label_column=args.label_column, dataset_info=info)
    if args.task == "retrieval":
        image_column, caption_column = resolve_columns(dataset, data.image_column, data.caption_column)
        return RetrievalTask(dataset, caption_template=args.caption_template, image_column=image_column,
                             caption_column=caption_column, dataset_info=info, rescorer=rescorer,
                             rerank_k=args.rerank_k)
    raise SystemExit(f"error: --task must be classification or retrieval, not {args.task!r}")


def plot_task(task, record, path: Path, *, queries: int, k: int, seed: int) -> Path:
    """The PNG of a task: image queries with their best prompts or captions, and (retrieval) caption queries with
    their best images."""
    found = record.embeddings
    images = LazyImages(task.dataset, task.image_column, found["index"])
    if record.task == "classification":
        prompts = [task.templates[0].format(name) for name in found["class_names"]]
        rows = sample_retrievals(found["image_embeds"], found["classifier"], images, prompts,
                                 [[label] for label in found["labels"]], num_queries=queries, k=k, seed=seed)
    else:
        captions_of = captions_per_image(found["text_to_image"], len(images))
        rows = sample_retrievals(found["image_embeds"], found["text_embeds"], images, found["texts"], captions_of,
                                 num_queries=(queries + 1) // 2, k=k, seed=seed)
        rows += sample_retrievals(found["text_embeds"], found["image_embeds"], found["texts"], images,
                                  [[image] for image in found["text_to_image"]], num_queries=queries // 2, k=k,
                                  seed=seed)
    return plot_retrievals(rows, path, title=f"{record.name}: top-{k} (green = correct)")


def main(argv: list[str] | None = None) -> list[dict]:
    # 1. Arguments, and the demo's checkpoint when it is asked for and missing.
    args, data = HfArgumentParser((ZeroShotArguments, DataSourceArguments)).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    ensure_demo_checkpoint(args.model_name_or_path, Path(__file__).with_name("pretrain.py"))

    # 2. The checkpoint.
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loader = AutoModel
    if args.rerank_k:  # the matching head: COSMO's retrieval model (AutoModel gives its dual encoder)
        if AutoConfig.from_pretrained(args.model_name_or_path).model_type != "cosmo":
            raise SystemExit("error: --rerank_k needs a model with an image-text matching head (a COSMO checkpoint)")
        loader = CosmoForImageTextRetrieval
    model = loader.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code,
                                   dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    image_processor = AutoImageProcessor.from_pretrained(args.model_name_or_path,
                                                         trust_remote_code=args.trust_remote_code)
    rescorer = ITMRescorer(model, tokenizer, image_processor, batch_size=args.batch_size) if args.rerank_k else None

    # 3. The tasks, each evaluated, drawn and recorded.
    tasks = demo_tasks(args.seed) if not data.has_source else [build_task(args, data, rescorer)]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for task in tasks:
        record = task.run(model, tokenizer, image_processor, batch_size=args.batch_size,
                          num_workers=args.num_workers, return_embeddings=args.plot_queries > 0)
        if args.plot_queries > 0:
            if data.streaming:
                print("--streaming: no retrieval PNG (the rows cannot be read back by index)")
            else:
                record.plot = str(plot_task(task, record, output_dir / f"{record.name}_retrievals.png",
                                            queries=args.plot_queries, k=args.plot_k, seed=args.seed))
        records.append(record.to_dict())
        metrics = ", ".join(f"{name} {value:.1%}" for name, value in record.metrics.items())
        print(f"{record.name} on {record.dataset.get('name')}: {metrics} ({record.num_images} images, "
              f"{record.skipped_images} skipped)")

    # 4. The results file (the input of the model card).
    results = {"model": args.model_name_or_path, "results": records}
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results in {output_dir / 'results.json'}")
    return records


if __name__ == "__main__":
    main()
