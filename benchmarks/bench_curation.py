"""Throughput of CAT filtering and concept labelling against their peers, side by side in one process.

Modes (`--mode`, several allowed):
  captions  caption rules in captions/s, one process: the textblob fallback (`PatternCaptionParser`), and our spaCy
            path (`SpacyCaptionParser`) against the bare `nlp.pipe` of the same pipeline. No trained English pipeline
            can be installed offline, so the spaCy anchor is a blank English pipeline with spaCy's default tagger and
            parser (the architecture of `en_core_web_sm`: hash-embed CNN tok2vec, width 96, depth 4), randomly
            initialised: same cost per word, meaningless parses.
  ocr       text spotting in images/s at 224 px: `add_cat_signals` (text rule only) vs `rapidocr.RapidOCR` called
            directly on the same encoded images, same onnxruntime threads.
  num_proc  `cat_filter` on the same rows with num_proc=1 and num_proc=2 (caption rules only, and with OCR).
  concepts  `label_concepts` vs the raw timm loop on the same batches (decode, the teacher's transform, forward,
            top-k), and vs the forward alone on ready tensors.

  python benchmarks/bench_curation.py --mode captions ocr num_proc concepts
The last line of output is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import sys
import time

from curation import PatternCaptionParser, SpacyCaptionParser, add_cat_signals, cat_filter, label_concepts
from image_text_data.synthetic import encode, scene, text_image

SUBJECTS = ["a brown dog", "two young men", "the old woman", "a small cat", "a red car", "people", "a girl"]
VERBS = ["runs on", "sits near", "walks down", "is parked on", "plays with", "looks at", "rides"]
OBJECTS = ["the green grass", "a tall building", "the busy street", "a wooden table", "the blue sea", "a ball"]
EXTRAS = ["", " in the morning", " with a friend", " under a cloudy sky", ", stock photo", " for sale"]
WORDS = ["sale", "open", "daily", "cafe", "hotel", "new", "big", "free"]


def captions(n: int, seed: int = 0) -> list[str]:
    """Caption-like sentences of 5-12 words (LAION captions average about 11 words; ours about 8)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            out.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(EXTRAS)}")
        else:  # noun-phrase captions, as most of LAION
            out.append(f"{rng.choice(SUBJECTS)} and {rng.choice(OBJECTS)}{rng.choice(EXTRAS)}")
    return out


def images(n: int, seed: int = 0) -> list[bytes]:
    """224-px JPEGs, half with rendered words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2:
            out.append(encode(text_image(" ".join(rng.sample(WORDS, 2)).upper()), "JPEG"))
        else:
            out.append(encode(scene(i), "JPEG"))
    return out


def timed(function, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def spacy_anchor_pipeline():
    """A blank English pipeline with spaCy's default tagger + parser, initialised on one hand-labelled example."""
    import spacy
    from spacy.training import Example

    nlp = spacy.blank("en")
    nlp.add_pipe("tagger")
    nlp.add_pipe("parser")
    doc = nlp.make_doc("a brown dog runs on the grass")
    example = Example.from_dict(doc, {"tags": ["DT", "JJ", "NN", "VBZ", "IN", "DT", "NN"],
                                      "heads": [2, 2, 3, 3, 3, 6, 4],
                                      "deps": ["det", "amod", "nsubj", "ROOT", "prep", "det", "pobj"]})
    nlp.initialize(lambda: [example])
    return nlp


def bench_captions(args) -> dict:
    texts = captions(args.captions)
    words = sum(len(t.split()) for t in texts)
    fallback = PatternCaptionParser()
    fallback(texts[:50])
    t_fallback = timed(lambda: fallback(texts), args.repeats)
    nlp = spacy_anchor_pipeline()
    ours = SpacyCaptionParser(nlp)
    list(nlp.pipe(texts[:50]))
    t_pipe = timed(lambda: list(nlp.pipe(texts, batch_size=256)), args.repeats)
    t_ours = timed(lambda: ours(texts), args.repeats)
    result = {
        "captions": len(texts), "words_per_caption": words / len(texts),
        "fallback_captions_per_s": len(texts) / t_fallback,
        "spacy_pipe_captions_per_s": len(texts) / t_pipe, "spacy_pipe_words_per_s": words / t_pipe,
        "spacy_ours_captions_per_s": len(texts) / t_ours, "spacy_ours_over_pipe": t_pipe / t_ours,
    }
    print(f"caption rules, {len(texts)} captions of {words / len(texts):.1f} words, 1 process:")
    print(f"  textblob fallback        {result['fallback_captions_per_s']:8.0f} captions/s")
    print(f"  spaCy nlp.pipe (anchor)  {result['spacy_pipe_captions_per_s']:8.0f} captions/s "
          f"({result['spacy_pipe_words_per_s']:.0f} words/s)")
    print(f"  spaCy + our rules        {result['spacy_ours_captions_per_s']:8.0f} captions/s "
          f"(ours / pipe = {result['spacy_ours_over_pipe']:.3f}x)")
    return result


def bench_ocr(args) -> dict:
    from datasets import Dataset, Features, Image, Value
    from rapidocr import RapidOCR

    data = images(args.images)
    engine = RapidOCR(params={"Global.log_level": "error"})
    engine(data[1])
    dataset = Dataset.from_dict({"image": [{"bytes": d, "path": None} for d in data],
                                 "caption": ["a caption"] * len(data)},
                                features=Features({"image": Image(), "caption": Value("string")}))
    add_cat_signals(dataset.select(range(2)), min_complexity=0, min_actions=0, caption_parser="textblob")
    raw_times, our_times = [], []
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits both alike
        raw_times.append(timed(lambda: [engine(d) for d in data]))
        our_times.append(timed(lambda: add_cat_signals(dataset, min_complexity=0, min_actions=0,
                                                       caption_parser="textblob", batch_size=32)))
    raw, ours = min(raw_times), min(our_times)
    result = {"images": len(data), "raw_rapidocr_images_per_s": len(data) / raw,
              "ours_images_per_s": len(data) / ours, "ours_over_raw": raw / ours}
    print(f"text spotting, {len(data)} images at 224 px (half with text):")
    print(f"  rapidocr directly   {result['raw_rapidocr_images_per_s']:6.2f} images/s")
    print(f"  add_cat_signals     {result['ours_images_per_s']:6.2f} images/s  "
          f"(ours / raw = {result['ours_over_raw']:.3f}x)")
    return result


def bench_num_proc(args) -> dict:
    from datasets import Dataset, Features, Image, Value

    texts = captions(args.rows)
    caption_set = Dataset.from_dict({"caption": texts, "image": [None] * len(texts)})
    data = images(args.images)
    ocr_set = Dataset.from_dict({"image": [{"bytes": d, "path": None} for d in data],
                                 "caption": ["a brown dog runs on the green grass"] * len(data)},
                                features=Features({"image": Image(), "caption": Value("string")}))
    result = {}
    for name, dataset, spotting in (("captions", caption_set, False), ("ocr", ocr_set, True)):
        times = {}
        for num_proc in (1, 2):
            times[num_proc] = timed(lambda: cat_filter(dataset, text_spotting=spotting, caption_parser="textblob",
                                                       num_proc=num_proc if num_proc > 1 else None,
                                                       min_actions=0 if spotting else 1), args.repeats)
        result[name] = {"rows": len(dataset), "seconds_num_proc_1": times[1], "seconds_num_proc_2": times[2],
                        "speedup": times[1] / times[2]}
        print(f"cat_filter {name:8s} {len(dataset):6d} rows: num_proc=1 {times[1]:6.2f} s, "
              f"num_proc=2 {times[2]:6.2f} s, speed-up {times[1] / times[2]:.2f}x")
    return result


def bench_concepts(args) -> dict:
    import timm
    import torch
    from datasets import Dataset, Features, Image
    from PIL import Image as PILImage
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(0)
    teacher = timm.create_model(args.teacher, pretrained=False).eval()
    transform = create_transform(**resolve_data_config({}, model=teacher))
    data = [encode(scene(i, 256), "JPEG") for i in range(args.concept_images)]
    dataset = Dataset.from_dict({"image": [{"bytes": d, "path": None} for d in data]},
                                features=Features({"image": Image()}))
    batches = [data[i: i + args.batch_size] for i in range(0, len(data), args.batch_size)]
    tensors = [torch.stack([transform(PILImage.open(io.BytesIO(d)).convert("RGB")) for d in b]) for b in batches]

    @torch.inference_mode()
    def raw_loop():
        for batch in batches:
            x = torch.stack([transform(PILImage.open(io.BytesIO(d)).convert("RGB")) for d in batch])
            teacher(x).softmax(-1).topk(5)

    @torch.inference_mode()
    def forward_only():
        for x in tensors:
            teacher(x)

    def ours():
        label_concepts(dataset, teacher, top_k=5, batch_size=args.batch_size, device="cpu")

    ours()  # warm-up (and datasets' fingerprinting of the teacher)
    raw_t, fwd_t, our_t = [], [], []
    for _ in range(args.repeats):
        raw_t.append(timed(raw_loop))
        fwd_t.append(timed(forward_only))
        our_t.append(timed(ours))
    n = len(data)
    result = {"teacher": args.teacher, "images": n, "batch_size": args.batch_size,
              "raw_loop_images_per_s": n / min(raw_t), "forward_only_images_per_s": n / min(fwd_t),
              "ours_images_per_s": n / min(our_t), "ours_over_raw_loop": min(raw_t) / min(our_t),
              "ours_over_forward_only": min(fwd_t) / min(our_t)}
    print(f"concept labelling, {args.teacher} (random init), {n} images, batch {args.batch_size}, CPU:")
    print(f"  timm forward only (ready tensors)   {result['forward_only_images_per_s']:6.2f} images/s")
    print(f"  timm loop (decode+transform+fwd)    {result['raw_loop_images_per_s']:6.2f} images/s")
    print(f"  label_concepts                      {result['ours_images_per_s']:6.2f} images/s  "
          f"(ours / loop = {result['ours_over_raw_loop']:.3f}x, ours / forward = "
          f"{result['ours_over_forward_only']:.3f}x)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", nargs="+", default=["captions", "ocr", "num_proc", "concepts"],
                        choices=["captions", "ocr", "num_proc", "concepts"])
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=20000, help="rows for the num_proc caption run")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--concept_images", type=int, default=128)
    parser.add_argument("--teacher", default="resnet50")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("curation").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    results = {}
    for mode in args.mode:
        results[mode] = {"captions": bench_captions, "ocr": bench_ocr, "num_proc": bench_num_proc,
                         "concepts": bench_concepts}[mode](args)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
