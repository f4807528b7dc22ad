"""Zero-shot evaluation throughput vs the raw model forward on the same batches, in one process.

The evaluation loop (`evaluation.evaluate_classification`'s image side: JPEG decoding and preprocessing in a
DataLoader, the image tower, normalisation, the zero-shot logits, top-k and the `evaluate` metric module) is timed
against the bare image-tower forward (`get_image_features`) on the same images, already preprocessed into the same
batches. The ratio says how much of the model's speed the evaluation keeps (issue 5 target: >= 0.9x). Building the
classifier (C classes x T templates through the text tower) is a one-off per class set and is reported apart.
Rounds of the two are interleaved so machine noise hits both alike; medians are reported.

    python benchmarks/bench_zero_shot.py --model diht_vitb32_224px --images 256 --batch 64 --rounds 3
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time

import torch
from datasets import Dataset, Features, Image, Value

from evaluation import classification_metrics, encode_images, image_batches, zero_shot_classifier
from evaluation.templates import OPENAI_IMAGENET_TEMPLATES
from image_text_data.demo import build_scenes, class_names
from modeling_diht import DiHTConfig, DiHTModel
from modeling_diht.processing_diht import build_image_processor, build_tokenizer


def jpeg_dataset(num: int, size: int) -> Dataset:
    """Rendered scenes stored as JPEG bytes, as a real evaluation set would hold them."""
    scenes = build_scenes(num, image_size=size, seed=0)
    blobs = []
    for image in scenes["image"]:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        blobs.append({"bytes": buffer.getvalue(), "path": None})
    return Dataset.from_dict({"image": blobs, "label": scenes["label"]},
                             features=Features({"image": Image(), "label": Value("int64")}))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="diht_vitb32_224px", help="a DiHT preset (random weights)")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num_workers", type=int, default=1, help="DataLoader workers of the evaluation")
    parser.add_argument("--image_size", type=int, default=256, help="stored image side before preprocessing")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = DiHTModel(DiHTConfig.from_preset(args.model)).to(args.device, dtype).eval()
    tokenizer = build_tokenizer()
    processor = build_image_processor(model.config.vision_config.image_size)
    dataset = jpeg_dataset(args.images, args.image_size)
    names = class_names()

    start = time.perf_counter()
    classifier = zero_shot_classifier(model, tokenizer, names, OPENAI_IMAGENET_TEMPLATES)
    sync(args.device)
    classifier_seconds = time.perf_counter() - start

    # The raw forward's input: the very batches the evaluation builds, preprocessed beforehand.
    batches = [b["pixel_values"] for b in image_batches(dataset, processor, batch_size=args.batch)]

    @torch.inference_mode()
    def raw() -> None:
        for pixels in batches:
            model.get_image_features(pixel_values=pixels.to(args.device, dtype))
        sync(args.device)

    def ours() -> None:
        loader = image_batches(dataset, processor, keep_columns=["label"], batch_size=args.batch,
                               num_workers=args.num_workers)
        embeds, extras = encode_images(model, loader)
        classification_metrics(embeds, classifier, extras["label"])
        sync(args.device)

    raw()  # warm-up: allocator, kernels, worker start-up code paths
    ours()
    times = {"raw": [], "ours": []}
    for _ in range(args.rounds):
        for name, run in (("raw", raw), ("ours", ours)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    raw_rate = args.images / statistics.median(times["raw"])
    ours_rate = args.images / statistics.median(times["ours"])
    result = {
        "model": args.model, "device": args.device, "dtype": args.dtype, "images": args.images, "batch": args.batch,
        "num_workers": args.num_workers, "raw_forward_images_per_s": round(raw_rate, 2),
        "zero_shot_eval_images_per_s": round(ours_rate, 2), "ratio": round(ours_rate / raw_rate, 3),
        "classifier_seconds": round(classifier_seconds, 2),
        "classifier_prompts": len(names) * len(OPENAI_IMAGENET_TEMPLATES),
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or
        platform.machine(),
    }
    print(json.dumps(result, indent=2))
    print(f"zero-shot evaluation {ours_rate:.1f} images/s vs raw forward {raw_rate:.1f} images/s: "
          f"{ours_rate / raw_rate:.3f}x")


if __name__ == "__main__":
    main()
