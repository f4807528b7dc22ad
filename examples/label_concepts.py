"""Label every image with concepts from a frozen teacher, for DiHT's concept distillation
(Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

Adds `concept_ids` (the teacher's top-k classes, a `List(ClassLabel)` column that carries the vocabulary) and,
with `--return_scores`, `concept_scores`. Reads a Hub dataset, local files, a saved dataset or webdataset shards;
writes a saved dataset, parquet or shards, `vocabulary.json` (the class names, which size the DiHT concept heads)
and `report.json`.

    python examples/label_concepts.py cat/data --teacher vit_huge_patch14_clip_224.laion2b_ft_in12k \\
        --top_k 10 --output_dir labelled/             # one process per GPU when several are visible
    python examples/label_concepts.py cat/data --teacher test_vit --no_pretrained --output_dir /tmp/l  # offline
    python examples/label_concepts.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from datasets import Features, Image, IterableDataset
from tqdm.auto import tqdm

from curation import concept_vocabulary, label_concepts
from curation.sources import OUTPUT_FORMATS, load_source, save_dataset, undecoded


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("source", help="Hub dataset name, saved dataset folder, shard folder/glob, or data files")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--teacher", required=True, help="timm model name")
    parser.add_argument("--no_pretrained", action="store_true", help="random teacher weights (offline trials)")
    parser.add_argument("--seed", type=int, default=0, help="seeds a random teacher")
    parser.add_argument("--split", default="train")
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows (a trial run)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--caption_column", default="caption", help="written as .txt in webdataset output")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--return_scores", action="store_true")
    parser.add_argument("--activation", default="softmax", choices=["softmax", "sigmoid"])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--num_proc", type=int, default=None, help="default: one process per GPU")
    parser.add_argument("--format", default="saved", choices=OUTPUT_FORMATS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if torch.cuda.device_count() > 1:  # CUDA in forked workers fails; one spawned process per GPU
        import multiprocess

        multiprocess.set_start_method("spawn", force=True)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    source = load_source(args.source, split=args.split, streaming=args.streaming, limit=args.limit)
    image_feature = (source.features or {}).get(args.image_column)
    if args.format == "webdataset":  # shards keep the original image bytes
        source = undecoded(source, args.image_column)
    torch.manual_seed(args.seed)
    labelled, report = label_concepts(
        source, args.teacher, image_column=args.image_column, top_k=args.top_k, return_scores=args.return_scores,
        batch_size=args.batch_size, device=args.device, pretrained=not args.no_pretrained,
        activation=args.activation, num_proc=args.num_proc, return_report=True,
    )
    vocabulary = concept_vocabulary(labelled)
    features = labelled.features
    if isinstance(labelled, IterableDataset):
        rows = labelled  # a lazy stream: show progress as it is consumed while writing

        def progress():
            yield from tqdm(rows, desc="Concept labels", unit=" images")

        labelled = IterableDataset.from_generator(progress, features=features)
    if isinstance(image_feature, Image) and features is not None and args.format != "webdataset":
        features = Features({**features, args.image_column: image_feature})
    written = save_dataset(labelled, str(output_dir), format=args.format, image_column=args.image_column,
                           caption_column=args.caption_column, features=features)

    (output_dir / "vocabulary.json").write_text(json.dumps(vocabulary, indent=1))
    result = {"report": dict(report), "output": written, "vocabulary_size": len(vocabulary),
              "elapsed_seconds": round(time.perf_counter() - start, 2), "parameters": vars(args)}
    (output_dir / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["report"]))
    print(f"{report['labelled']} images labelled with the top-{args.top_k} of {len(vocabulary)} concepts "
          f"({report['undecodable_image']} undecodable, left with empty concept_ids); data in {written}, "
          f"vocabulary in {output_dir / 'vocabulary.json'}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
