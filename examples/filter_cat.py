"""CAT-filter an image-text dataset the DiHT way (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

Keeps the pairs whose caption is complex enough, contains an action, and is not written in the image (rules and our
definitions: `curation/cat_filter.py`). Reads a Hub dataset, local files, a saved dataset or webdataset shards
(img2dataset output); writes the kept pairs as a saved dataset, parquet or shards, with the CAT signals as columns;
prints and saves the report (`report.json`), and draws sample removed pairs per rule (`removed_samples.png`).

    python examples/filter_cat.py --dataset_name path/to/shards/ --output_dir cat/ --num_proc 8   # jpg/txt found
    python examples/filter_cat.py --dataset_name user/dataset --streaming --format webdataset --output_dir cat/
    python examples/filter_cat.py --help

The result feeds `examples/pretrain.py` directly (a saved dataset with `image` and `caption` columns). A caption
column of lists (COCO) gives one pair per caption (`--caption_list`, default `explode`). When CAT keeps no pair, the
command writes `report.json` and `removed_samples.png`, writes no data (an empty dataset is useless downstream) and
exits with status 1 and a message saying which rules removed what.
"""

from __future__ import annotations

import json
import logging
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Features, Image, IterableDataset
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from curation import CAT_RULES, CurationReport, add_cat_signals
from curation.cat_filter import REMOVED_BY
from image_text_data import (
    OUTPUT_FORMATS,
    DataSourceArguments,
    EmptyDatasetError,
    load_image,
    resolve_columns,
    save_dataset,
    undecoded,
)


@dataclass
class FilterArguments:
    output_dir: str = field(metadata={"help": "Where the kept pairs, report.json and removed_samples.png go."})
    split: str = field(default="train", metadata={"help": "The split to filter."})
    min_complexity: int = field(default=1, metadata={"help": "DiHT's C1; 0 disables the rule."})
    min_actions: int = field(default=1, metadata={"help": "0 disables the rule."})
    text_spotting: bool = field(default=True, metadata={"help": "Run OCR and the text rule."})
    max_text_overlap: float = field(default=0.5, metadata={
        "help": "Remove a pair when more than this share of the spotted words is in the caption."})
    parser: str | None = field(default=None, metadata={
        "help": "spaCy pipeline name, 'spacy', or 'textblob' (default: the best installed)."})
    ocr_device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: rapidocr's)."})
    num_proc: int | None = field(default=None, metadata={"help": "Worker processes (in-memory datasets)."})
    batch_size: int = field(default=64, metadata={"help": "Rows per map batch."})
    format: str = field(default="saved", metadata={"help": f"Output format: one of {OUTPUT_FORMATS}."})
    samples_per_rule: int = field(default=6, metadata={"help": "Removed pairs drawn per rule in the PNG."})


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
    # 1. Arguments and the source.
    data, args = HfArgumentParser((DataSourceArguments, FilterArguments)).parse_args_into_dataclasses(args=argv)
    if args.format not in OUTPUT_FORMATS:
        raise SystemExit(f"error: --format must be one of {OUTPUT_FORMATS}, not {args.format!r}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    source = data.load(args.split)
    image_column, caption_column = resolve_columns(source, data.image_column, data.caption_column)
    image_feature = (source.features or {}).get(image_column)

    # 2. The CAT signals and verdicts (images stay undecoded bytes until a rule needs them: a corrupt one is counted).
    signals = add_cat_signals(
        undecoded(source, image_column), image_column=image_column, caption_column=caption_column,
        min_complexity=args.min_complexity, min_actions=args.min_actions, text_spotting=args.text_spotting,
        max_text_overlap=args.max_text_overlap, caption_parser=args.parser, ocr_device=args.ocr_device,
        num_proc=args.num_proc, batch_size=args.batch_size, caption_list=data.caption_list,
    )
    # 3. The kept pairs, the report and sample pairs of every rule.
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
            features = Features({**features, image_column: image_feature}) if features is not None else None
        else:
            kept = kept.cast_column(image_column, image_feature)
    # 4. Written out, with the report and the PNG (no data when CAT kept nothing: refused, with the reasons).
    try:
        written = save_dataset(kept, str(output_dir), format=args.format, image_column=image_column,
                               caption_column=caption_column, features=features)
    except EmptyDatasetError:
        if report["kept"]:
            raise
        written = None
    draw_samples(samples, output_dir / "removed_samples.png", image_column, caption_column)
    result = {"report": dict(report), "output": written, "elapsed_seconds": round(time.perf_counter() - start, 2),
              "parameters": {**vars(data), **vars(args)}}
    (output_dir / "report.json").write_text(json.dumps(result, indent=2))
    print(report.summary())
    if written is None:
        removed = ", ".join(f"{key[len('removed_by_'):]} {count}" for key, count in report.items()
                            if key.startswith("removed_by_") and count)
        raise SystemExit(f"error: CAT kept none of the {report['total']} pairs ({removed or 'the source has no rows'}"
                         f"); nothing was written. See {output_dir / 'report.json'} and "
                         f"{output_dir / 'removed_samples.png'}, and loosen --min_complexity / --min_actions / "
                         "--max_text_overlap, or check the columns.")
    print(f"kept pairs in {written}; report in {output_dir / 'report.json'}; "
          f"samples per rule in {output_dir / 'removed_samples.png'}")
    return result


if __name__ == "__main__":
    main()
