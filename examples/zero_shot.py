"""Zero-shot evaluation of a DiHT or CLIP checkpoint with the protocols DiHT reports (arXiv 2301.02280, PAPERS.md §1.6).

    python examples/zero_shot.py --model_name_or_path org/diht-b16 --dataset imagenet-1k --split validation \\
        --class_names openai_imagenet --templates openai_imagenet            # top-1/top-5, 80 prompt templates
    python examples/zero_shot.py --model_name_or_path org/diht-b16 --task retrieval --dataset my/coco-karpathy \\
        --split test --caption_column captions --caption_template "a photo of {}."   # R@1/5/10, both directions

`--dataset` is anything `curation.sources.load_source` opens: a Hub name, a folder written by `save_to_disk`, an image
folder (one sub-folder per class), webdataset/img2dataset shards, or parquet/csv/json files. Classification needs an
image and an integer label column (class names from its `ClassLabel`, `--class_names` or a file); retrieval needs an
image and a caption column holding one caption or a list of captions per image.

With no arguments it evaluates the embedded demo's checkpoint (`outputs/pretrain/model`, trained first by
`examples/pretrain.py` if it is missing) on freshly rendered scenes: classification over the 20 colour × shape classes
and retrieval of their captions.

It writes to `--output_dir`: `results.json` (one record per task: metrics, protocol, data) and, per task, a PNG of
sample queries with their top-k results and scores (`<task>_retrievals.png`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

import modeling_diht  # noqa: E402,F401  (registers DiHT with the Auto classes)
from curation.images import load_image  # noqa: E402
from curation.sources import load_source  # noqa: E402
from evaluation import (  # noqa: E402
    ClassificationTask,
    RetrievalTask,
    captions_per_image,
    plot_retrievals,
    resolve_templates,
    sample_retrievals,
)
from pretrain import DEMO_CHECKPOINT, ensure_demo_checkpoint  # noqa: E402

@dataclass
class ZeroShotArguments:
    model_name_or_path: str = field(default=DEMO_CHECKPOINT, metadata={
        "help": "a DiHT or CLIP checkpoint (Hub id or folder with tokenizer and image processor)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "load DiHT repos without this package"})
    task: str = field(default="classification", metadata={"help": "classification | retrieval"})
    dataset: str | None = field(default=None, metadata={"help": "Hub name, saved dataset, image folder, shards or "
                                                                "data files; none: the embedded demo"})
    dataset_config: str | None = field(default=None, metadata={"help": "configuration of a Hub dataset"})
    split: str = field(default="validation", metadata={"help": "the split to evaluate on"})
    image_column: str = "image"
    label_column: str = "label"
    caption_column: str = "caption"
    class_names: str | None = field(default=None, metadata={
        "help": "a file with one class name per line, or 'openai_imagenet' (OpenAI's curated ImageNet names, from "
                "open_clip); default: the label column's ClassLabel names"})
    templates: str = field(default="openai_imagenet", metadata={
        "help": "openai_imagenet (the 80 templates) | simple | none | a file with one template per line"})
    caption_template: str | None = field(default=None, metadata={
        "help": "wrap every caption, e.g. 'a photo of {}.' (the DiHT retrieval protocol)"})
    max_samples: int | None = field(default=None, metadata={"help": "evaluate on the first N rows only"})
    streaming: bool = field(default=False, metadata={"help": "stream the dataset instead of downloading it whole"})
    batch_size: int = 64
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers that decode and preprocess images"})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16 weights"})
    output_dir: str = "outputs/zero_shot"
    plot_queries: int = field(default=6, metadata={"help": "queries drawn in the PNG (0: no PNG)"})
    plot_k: int = field(default=5, metadata={"help": "results per drawn query"})
    seed: int = 0


def openai_imagenet_class_names() -> list[str]:
    """OpenAI's curated ImageNet class names, from the open_clip wheel (`pip install open_clip_torch`)."""
    try:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    except ImportError as error:
        raise SystemExit("--class_names openai_imagenet reads the names from open_clip: pip install open_clip_torch"
                         ) from error
    return list(IMAGENET_CLASSNAMES)


def read_class_names(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    if spec == "openai_imagenet":
        return openai_imagenet_class_names()
    return [line.strip() for line in Path(spec).read_text(encoding="utf-8").splitlines() if line.strip()]


def demo_tasks(seed: int) -> list[ClassificationTask | RetrievalTask]:
    """Fresh scenes of the embedded demo (a seed its training never used): both tasks."""
    from synthetic_scenes import CLASS_PROMPT, build_scenes, class_names

    scenes = build_scenes(240, image_size=128, seed=1000 + seed)
    names = class_names()  # "red circle", ...
    template = CLASS_PROMPT.replace("{color} {shape}", "{}")  # "a photo of a {}", the prompts the demo trained with
    captions = scenes["caption"]
    unique = [i for i, caption in enumerate(captions) if captions.count(caption) == 1]  # one relevant text per image
    info = {"name": "synthetic scenes (demo)", "type": "synthetic-scenes", "split": "test"}
    return [
        ClassificationTask(scenes, class_names=names, templates=[template], dataset_info=info),
        RetrievalTask(scenes.select(unique), dataset_info=info),
    ]


def build_task(args: ZeroShotArguments) -> ClassificationTask | RetrievalTask:
    dataset = load_source(args.dataset, split=args.split, streaming=args.streaming, name=args.dataset_config,
                          limit=args.max_samples)
    info = {"name": args.dataset, "type": args.dataset, "split": args.split}
    if args.dataset_config:
        info["config"] = args.dataset_config
    if args.task == "classification":
        return ClassificationTask(dataset, class_names=read_class_names(args.class_names),
                                  templates=resolve_templates(args.templates), image_column=args.image_column,
                                  label_column=args.label_column, dataset_info=info)
    if args.task == "retrieval":
        return RetrievalTask(dataset, caption_template=args.caption_template, image_column=args.image_column,
                             caption_column=args.caption_column, dataset_info=info)
    raise SystemExit(f"error: --task must be classification or retrieval, not {args.task!r}")


class LazyImages(Sequence):
    """The images of some dataset rows, decoded only when drawn: a plot shows a handful of the N images."""

    def __init__(self, dataset, column: str, rows: list[int]):
        self.dataset, self.column, self.rows = dataset, column, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int):
        return load_image(self.dataset[self.rows[position]][self.column])


def plot_task(task, record: dict, path: Path, *, queries: int, k: int, seed: int) -> Path:
    """The PNG of a task: image queries with their best prompts or captions, and (retrieval) caption queries with
    their best images."""
    found = record["embeddings"]
    images = LazyImages(task.dataset, task.image_column, found["index"])
    if record["task"] == "classification":
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
    return plot_retrievals(rows, path, title=f"{record['name']}: top-{k} (green = correct)")


def main(argv: list[str] | None = None) -> list[dict]:
    args, = HfArgumentParser(ZeroShotArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    ensure_demo_checkpoint(args.model_name_or_path)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code,
                                      dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    image_processor = AutoImageProcessor.from_pretrained(args.model_name_or_path,
                                                         trust_remote_code=args.trust_remote_code)

    tasks = demo_tasks(args.seed) if args.dataset is None else [build_task(args)]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for task in tasks:
        record = task.run(model, tokenizer, image_processor, batch_size=args.batch_size,
                          num_workers=args.num_workers, return_embeddings=args.plot_queries > 0)
        if args.plot_queries > 0:
            if args.streaming:
                print("--streaming: no retrieval PNG (the rows cannot be read back by index)")
            else:
                record["plot"] = str(plot_task(task, record, output_dir / f"{record['name']}_retrievals.png",
                                               queries=args.plot_queries, k=args.plot_k, seed=args.seed))
        record.pop("embeddings", None)  # tensors for the plot; results.json keeps the record
        records.append(record)
        metrics = ", ".join(f"{name} {value:.1%}" for name, value in record["metrics"].items())
        print(f"{record['name']} on {record['dataset'].get('name')}: {metrics} ({record['num_images']} images, "
              f"{record['skipped_images']} skipped)")

    results = {"model": args.model_name_or_path, "results": records}
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results in {output_dir / 'results.json'}")
    return records


if __name__ == "__main__":
    main()
