"""Label every image with concepts from a frozen teacher, for DiHT's concept distillation
(Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

Adds `concept_ids` (the teacher's top-k classes, a `List(ClassLabel)` column that carries the vocabulary) and,
with `--return_scores`, `concept_scores`. Reads a Hub dataset, local files, a saved dataset or webdataset shards;
writes a saved dataset, parquet or shards, `vocabulary.json` (the class names, which size the DiHT concept heads)
and `report.json`.

    python examples/label_concepts.py --dataset_path cat/data --teacher vit_huge_patch14_clip_224.laion2b_ft_in12k \\
        --top_k 10 --output_dir labelled/             # one process per GPU when several are visible
    python examples/label_concepts.py --dataset_path cat/data --teacher test_vit --no_pretrained --output_dir /tmp/l
    python examples/label_concepts.py --help
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Features, Image, IterableDataset
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from curation import concept_vocabulary, label_concepts
from image_text_data import (
    CAPTION_COLUMNS,
    OUTPUT_FORMATS,
    DataSourceArguments,
    EmptyDatasetError,
    column_names,
    resolve_image_column,
    save_dataset,
    undecoded,
)


@dataclass
class LabelArguments:
    output_dir: str = field(metadata={"help": "Where the labelled data, vocabulary.json and report.json go."})
    teacher: str = field(metadata={"help": "A timm model name (its pretrained weights from the local Hub cache)."})
    no_pretrained: bool = field(default=False, metadata={"help": "Random teacher weights (offline trials)."})
    seed: int = field(default=0, metadata={"help": "Seeds a random teacher."})
    split: str = field(default="train", metadata={"help": "The split to label."})
    top_k: int = field(default=5, metadata={"help": "Teacher concepts kept per image."})
    return_scores: bool = field(default=False, metadata={"help": "Also write the teacher's scores (soft targets)."})
    activation: str = field(default="softmax", metadata={"help": "softmax (single-label teacher) or sigmoid.",
                                                         "choices": ["softmax", "sigmoid"]})
    batch_size: int = field(default=64, metadata={"help": "Images per teacher forward."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 (default: cuda when available)."})
    num_proc: int | None = field(default=None, metadata={"help": "Worker processes (default: one per GPU)."})
    format: str = field(default="saved", metadata={"help": f"Output format: one of {OUTPUT_FORMATS}."})


def main(argv: list[str] | None = None) -> dict:
    # 1. Arguments and the source.
    data, args = HfArgumentParser((DataSourceArguments, LabelArguments)).parse_args_into_dataclasses(args=argv)
    if args.format not in OUTPUT_FORMATS:
        raise SystemExit(f"error: --format must be one of {OUTPUT_FORMATS}, not {args.format!r}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if torch.cuda.device_count() > 1:  # CUDA in forked workers fails; one spawned process per GPU
        import multiprocess

        multiprocess.set_start_method("spawn", force=True)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    try:
        source = data.load(args.split)
    except EmptyDatasetError as error:  # e.g. CAT kept nothing: say so, with its report, instead of a traceback
        raise SystemExit(f"error: {error}") from None
    image_column = resolve_image_column(source, data.image_column)
    caption_column = data.caption_column or next((c for c in CAPTION_COLUMNS if c in column_names(source)), None)
    image_feature = (source.features or {}).get(image_column)
    if args.format == "webdataset":  # shards keep the original image bytes
        source = undecoded(source, image_column)

    # 2. The teacher's concepts for every image (one that cannot be labelled gets empty lists, counted by reason).
    torch.manual_seed(args.seed)
    labelled, report = label_concepts(
        source, args.teacher, image_column=image_column, top_k=args.top_k, return_scores=args.return_scores,
        batch_size=args.batch_size, device=args.device, pretrained=not args.no_pretrained,
        activation=args.activation, num_proc=args.num_proc, return_report=True,
    )
    vocabulary = concept_vocabulary(labelled)

    # 3. Written out, with the vocabulary and the report.
    features = labelled.features
    if isinstance(labelled, IterableDataset):
        rows = labelled  # a lazy stream: show progress as it is consumed while writing

        def progress():
            yield from tqdm(rows, desc="Concept labels", unit=" images")

        labelled = IterableDataset.from_generator(progress, features=features)
    if isinstance(image_feature, Image) and features is not None and args.format != "webdataset":
        features = Features({**features, image_column: image_feature})
    written = save_dataset(labelled, str(output_dir), format=args.format, image_column=image_column,
                           caption_column=caption_column, features=features)

    (output_dir / "vocabulary.json").write_text(json.dumps(vocabulary, indent=1))
    result = {"report": dict(report), "output": written, "vocabulary_size": len(vocabulary),
              "elapsed_seconds": round(time.perf_counter() - start, 2), "parameters": {**vars(data), **vars(args)}}
    (output_dir / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["report"]))
    skipped = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in report.items()
                        if reason not in ("total", "labelled"))
    print(f"{report['labelled']} images labelled with the top-{args.top_k} of {len(vocabulary)} concepts "
          f"({skipped}: left with empty concept_ids); data in {written}, "
          f"vocabulary in {output_dir / 'vocabulary.json'}")
    return result


if __name__ == "__main__":
    main()
