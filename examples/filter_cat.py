"""CAT-filter an image-text dataset the DiHT way (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

Keeps the pairs whose caption is complex enough, contains an action, and is not written in the image (rules and our
definitions: `curation/cat_filter.py`). Reads a Hub dataset, local files, a saved dataset or webdataset shards
(img2dataset output); writes the kept pairs as a saved dataset, parquet or shards, with the CAT signals as columns;
prints and saves the report (`report.json`), and draws sample removed pairs per rule (`removed_samples.png`).

    python examples/filter_cat.py path/to/shards/ --image_column jpg --caption_column txt --output_dir cat/ \\
        --num_proc 8
    python examples/filter_cat.py user/dataset --streaming --format webdataset --output_dir cat/
    python examples/filter_cat.py --help

The result feeds `examples/pretrain.py` directly (a saved dataset with `image` and `caption` columns).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
from pathlib import Path

from datasets import Features, Image, IterableDataset
from tqdm.auto import tqdm

from curation import CAT_RULES, CurationReport, add_cat_signals, load_image
from curation.cat_filter import REMOVED_BY
from curation.sources import OUTPUT_FORMATS, load_source, save_dataset, undecoded


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("source", help="Hub dataset name, saved dataset folder, shard folder/glob, or data files")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--streaming", action="store_true", help="read the source lazily (no full download)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows (a trial run)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--caption_column", default="caption")
    parser.add_argument("--min_complexity", type=int, default=1, help="DiHT's C1; 0 disables the rule")
    parser.add_argument("--min_actions", type=int, default=1, help="0 disables the rule")
    parser.add_argument("--no_text_spotting", action="store_true", help="skip OCR and the text rule")
    parser.add_argument("--max_text_overlap", type=float, default=0.5,
                        help="remove a pair when more than this share of the spotted words is in the caption")
    parser.add_argument("--parser", default=None, help="spaCy pipeline name, 'spacy', or 'textblob' (default: auto)")
    parser.add_argument("--ocr_device", default=None, choices=["cpu", "cuda"])
    parser.add_argument("--num_proc", type=int, default=None, help="worker processes (in-memory datasets)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--format", default="saved", choices=OUTPUT_FORMATS)
    parser.add_argument("--samples_per_rule", type=int, default=6, help="removed pairs drawn per rule in the PNG")
    return parser.parse_args(argv)


def draw_samples(samples: dict[str, list[dict]], path: Path, image_column: str, caption_column: str) -> None:
    """A grid with one row per outcome (each rule, then kept pairs): image, caption and its CAT signals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outcomes = [name for name in samples if samples[name]]
    if not outcomes:
        return
    columns = max(len(samples[name]) for name in outcomes)
    figure, axes = plt.subplots(len(outcomes), columns, figsize=(2.6 * columns, 3.2 * len(outcomes)), squeeze=False)
    for r, outcome in enumerate(outcomes):
        for c in range(columns):
            axis = axes[r][c]
            axis.axis("off")
            if c >= len(samples[outcome]):
                continue
            row = samples[outcome][c]
            try:
                axis.imshow(load_image(row[image_column]))
            except Exception as error:  # undecodable images are a rule of their own: show why
                axis.text(0.5, 0.5, textwrap.fill(str(error), 28), ha="center", va="center", fontsize=6)
            signals = f"C={row['caption_complexity']} A={row['num_actions']}"
            if row.get("spotted_text"):
                signals += f" OCR='{row['spotted_text'][:24]}' ({row['text_overlap']:.2f})"
            caption = str(row.get(caption_column))[:90]
            axis.set_title(f"{textwrap.fill(caption, 34)}\n{signals}", fontsize=6)
        axes[r][0].text(-0.08, 0.5, outcome.replace("_", " "), transform=axes[r][0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=9, weight="bold")
    figure.suptitle("CAT filtering: sample pairs per rule (C = complexity, A = actions)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    source = load_source(args.source, split=args.split, streaming=args.streaming, limit=args.limit)
    image_feature = (source.features or {}).get(args.image_column)
    # Images stay undecoded bytes until a rule needs them, so a corrupt one is counted, never fatal.
    signals = add_cat_signals(
        undecoded(source, args.image_column), image_column=args.image_column, caption_column=args.caption_column,
        min_complexity=args.min_complexity, min_actions=args.min_actions, text_spotting=not args.no_text_spotting,
        max_text_overlap=args.max_text_overlap, caption_parser=args.parser, ocr_device=args.ocr_device,
        num_proc=args.num_proc, batch_size=args.batch_size,
    )
    report = CurationReport(CAT_RULES)
    samples: dict[str, list[dict]] = {rule: [] for rule in (*CAT_RULES, "kept")}

    def keep(outcome: str | None, row_or_index) -> None:
        name = outcome or "kept"
        if len(samples[name]) < args.samples_per_rule:
            samples[name].append(row_or_index)

    if isinstance(signals, IterableDataset):
        def kept_rows():
            for row in tqdm(signals, desc="CAT filter", unit=" pairs"):
                outcome = row.pop(REMOVED_BY)
                report.add([outcome])
                keep(outcome, row)
                if outcome is None:
                    yield row

        features = None
        if signals.features is not None:
            features = Features({k: v for k, v in signals.features.items() if k != REMOVED_BY})
        kept = IterableDataset.from_generator(kept_rows, features=features)
    else:
        outcomes = list(signals[REMOVED_BY])
        report.add(outcomes)
        for index, outcome in enumerate(outcomes):
            keep(outcome, index)
        samples = {name: [signals[i] for i in indices] for name, indices in samples.items()}
        kept = signals.select([i for i, outcome in enumerate(outcomes) if outcome is None]).remove_columns(REMOVED_BY)
        features = None

    if isinstance(image_feature, Image) and args.format != "webdataset":  # shards keep the original bytes
        if isinstance(kept, IterableDataset):
            features = Features({**features, args.image_column: image_feature}) if features is not None else None
        else:
            kept = kept.cast_column(args.image_column, image_feature)
    written = save_dataset(kept, str(output_dir), format=args.format, image_column=args.image_column,
                           caption_column=args.caption_column, features=features)
    draw_samples(samples, output_dir / "removed_samples.png", args.image_column, args.caption_column)
    result = {"report": dict(report), "output": written, "elapsed_seconds": round(time.perf_counter() - start, 2),
              "parameters": {k: v for k, v in vars(args).items()}}
    (output_dir / "report.json").write_text(json.dumps(result, indent=2))
    print(report.summary())
    print(f"kept pairs in {written}; report in {output_dir / 'report.json'}; "
          f"samples per rule in {output_dir / 'removed_samples.png'}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
