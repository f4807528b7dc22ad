"""One controlled ablation of every component of both recipes, on data whose structure is planted and known.

DiHT (Radenovic et al., CVPR 2023, arXiv 2301.02280): CAT filtering (§3.1), concept distillation (§3.2), HN-NCE
(§3.3), prompt-initialised few-shot (§4, few-shot linear probing). COSMO/MAFA (Byun, Kim and Moon, CVPR 2024, arXiv
2312.06112): GRIT grouped mini-batches (GRIT-VLP, arXiv 2208.04060), efficient connection mining (ECM), smoothed ITC
(S-ITC); and HN-NCE as COSMO's ITC, a combination no paper has.

    python benchmarks/ablations.py                 # the full table: 3 seeds, ~25 min on 2 quiet CPU cores
    python benchmarks/ablations.py --quick         # the test suite's run: 1 seed, tiny sizes, ~1 min

The data are two-object scenes (`image_text_data.demo.build_relation_scenes`): "a red circle sits to the left of a
blue square", 72 classes (3 colours x 3 shapes, ordered pairs). Planted: every caption's one-attribute, one-object and
one-relation twins (hard negatives), two true captions per image and many images per class (false negatives, with the
many-to-many match table = class equality), CAT-removable noise (captions without attribute, captions without action or
relation, images with the caption's words written on them) and concepts a small teacher predicts (colours, shapes).

Every pair of variants trains on the same data, for the same steps, from the same initialisation, per seed; the
seeds change data, initialisation and batch order. Evaluation is on held-out scenes (`--num_eval` images, two
captions each). Metrics:
- zero-shot top-1 over the 72 classes ("a photo of a red circle to the left of a blue square");
- R@1, many-to-many: a retrieved caption (image) counts when it describes the query's class, whichever image it was
  written for; the mean of image→text and text→image;
- hard-negative accuracy: the share of (image, true caption, twin) triples whose true caption scores higher (ITC
  similarity; for COSMO also the ITM logit: "ITM accuracy");
- few-shot top-1 at 1/2/4 shots per class;
- ECM precision and recall of the conversions against the planted false negatives (`trainers.mining_quality`).

The table reports each variant's mean ± std over seeds, the paired difference (variant − baseline, per seed) with a
t-based 95% confidence interval, writes `results.json` and `ablations.png` to `--output_dir`, and prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import CLIPImageProcessor, TrainingArguments, set_seed

from curation import cat_filter, curate
from evaluation import (
    encode_images,
    encode_texts,
    evaluate_classification,
    evaluate_image_classifier,
    image_batches,
    zero_shot_classifier,
)
from evaluation.itm_rerank import ITMRescorer
from image_text_data import load_image, undecoded
from image_text_data.demo import (
    CLASS_TEMPLATE,
    CONCEPTS,
    TWIN_KINDS,
    build_relation_scenes,
    build_word_tokenizer,
    build_wordpiece_tokenizer,
    relation_class_names,
    relation_match_table,
    train_relation_teacher,
)
from modeling_cosmo import CosmoForPreTraining, cosmo_image_processor
from modeling_diht import DiHTForImageClassification, DiHTModel
from trainers import (
    CosmoTrainer,
    CosmoTrainingArguments,
    DiHTTrainer,
    DiHTTrainingArguments,
    ImageLabelCollator,
    ImageTextCollator,
    MaskedCaptions,
    cosmo_train_transform,
    diht_collator,
    diht_train_transform,
    few_shot_learning_rate,
    few_shot_search,
    mining_quality,
    sample_shots,
    tiny_cosmo_config,
    tiny_diht_config,
    train_demo_discriminator,
)


@dataclass
class Profile:
    """Sizes of one run of the table; `--quick` and the full defaults are two instances."""

    seeds: tuple[int, ...] = (0, 1, 2)
    image_size: int = 32  # model input; scenes render at twice this (text spotting needs legible letters)
    num_eval: int = 300  # held-out scenes, two captions each
    # DiHT
    diht_pool: int = 1500  # raw pairs before CAT (10% of each noisy kind)
    noise_share: float = 0.1
    diht_steps: int = 400
    diht_batch: int = 64
    diht_width: int = 64
    teacher_steps: int = 300
    shots: tuple[int, ...] = (1, 2, 4)
    few_shot_deltas: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    few_shot_bias_deltas: tuple[float, ...] = (0.0, 0.1)
    # COSMO
    cosmo_images: int = 600  # two captions each
    cosmo_epochs: float = 8
    cosmo_batch: int = 32
    discriminator_images: int = 600
    discriminator_epochs: float = 20


QUICK = Profile(seeds=(0,), num_eval=120, diht_pool=300, diht_steps=60, diht_batch=32, teacher_steps=60,
                shots=(1,), few_shot_deltas=(0.25,), few_shot_bias_deltas=(0.0,),
                cosmo_images=160, cosmo_epochs=3, discriminator_images=300, discriminator_epochs=8)

# Two-sided 95% quantiles of Student's t by degrees of freedom (scipy is not a dependency); larger df: the next
# smaller entry (conservative), 1.96 beyond 30.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile(df: int) -> float:
    if df > 30:
        return 1.96
    return T_975[max(k for k in T_975 if k <= df)]


def summary(values: list[float]) -> dict:
    """Mean and sample standard deviation (None for one value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def paired(variant: list[float], baseline: list[float]) -> dict:
    """The per-seed difference variant − baseline: mean, std and the t-based 95% confidence interval of its mean."""
    diffs = [a - b for a, b in zip(variant, baseline)]
    out = summary(diffs)
    if len(diffs) > 1:
        half = t_quantile(len(diffs) - 1) * out["std"] / math.sqrt(len(diffs))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    else:
        out["ci95"] = None
    return out


# ---- evaluation on the held-out scenes ------------------------------------------------------------------------------

@dataclass
class HeldOut:
    """The held-out scenes: one image per `image_id`, all captions (and their twins), the classes."""

    images: object  # a Dataset, one row per image (undecoded)
    image_labels: list[int]
    captions: list[str]
    caption_labels: list[int]
    caption_image: list[int]  # the image each caption was written for
    twins: list[list[str]]  # per caption, one twin per TWIN_KINDS


def held_out_scenes(num_images: int, image_size: int, seed: int) -> HeldOut:
    scenes = build_relation_scenes(num_images, captions_per_image=2, image_size=2 * image_size, seed=seed,
                                   with_twins=True)
    first = [row for row, (image_id, previous) in enumerate(zip(scenes["image_id"], [-1, *scenes["image_id"]]))
             if image_id != previous]
    images = undecoded(scenes.select(first), "image")
    return HeldOut(images=images, image_labels=images["label"], captions=scenes["caption"],
                   caption_labels=scenes["label"], caption_image=scenes["image_id"], twins=scenes["twin_captions"])


def image_embeddings(model, image_processor, data: HeldOut) -> torch.Tensor:
    embeds, extras = encode_images(model, image_batches(data.images, image_processor, batch_size=128))
    if extras["skipped"]:
        raise RuntimeError(f"{extras['skipped']} held-out images could not be decoded")
    return embeds  # (N_img, P)


def itc_metrics(model, tokenizer, image_processor, data: HeldOut) -> dict[str, float]:
    """Many-to-many R@1 and ITC hard-negative accuracy (overall and per twin kind) of a dual encoder."""
    images = image_embeddings(model, image_processor, data)  # (N_img, P)
    texts = encode_texts(model, tokenizer, data.captions)  # (N_txt, P)
    matches = relation_match_table(data.image_labels, data.caption_labels)  # (N_img, N_txt)
    similarity = images @ texts.t()
    i2t = matches[torch.arange(len(images)), similarity.argmax(1)].float().mean().item()
    t2i = matches[similarity.argmax(0), torch.arange(len(texts))].float().mean().item()
    twins = encode_texts(model, tokenizer, [t for group in data.twins for t in group]).view(len(texts), -1, texts.shape[1])
    own = images[torch.tensor(data.caption_image)]  # (N_txt, P) the image each caption was written for
    true_score = (own * texts).sum(-1, keepdim=True)  # (N_txt, 1)
    twin_score = torch.einsum("np,nkp->nk", own, twins)  # (N_txt, K)
    wins = (true_score > twin_score).float()
    metrics = {"r1": (i2t + t2i) / 2, "r1_image_to_text": i2t, "r1_text_to_image": t2i,
               "hard_negative_accuracy": wins.mean().item()}
    metrics.update({f"hard_negative_accuracy_{kind}": wins[:, k].mean().item() for k, kind in enumerate(TWIN_KINDS)})
    return metrics


def zero_shot_top1(model, tokenizer, image_processor, data: HeldOut) -> float:
    record = evaluate_classification(model, tokenizer, image_processor, data.images,
                                     class_names=relation_class_names(), templates=[CLASS_TEMPLATE], ks=(1,))
    return record.metrics["top1"]


def itm_accuracy(model, tokenizer, image_processor, data: HeldOut) -> float:
    """The share of (image, true caption, twin) triples whose true caption gets the higher ITM match logit."""
    rescorer = ITMRescorer(model, tokenizer, image_processor, max_length=tokenizer.model_max_length)
    texts = list(data.captions) + [t for group in data.twins for t in group]
    k = len(TWIN_KINDS)
    pairs = [(image, text) for text, image in enumerate(data.caption_image)]
    pairs += [(data.caption_image[n], len(data.captions) + n * k + j) for n in range(len(data.captions))
              for j in range(k)]
    images = [load_image(row["image"]) for row in data.images]
    scores = rescorer(images, texts, torch.tensor(pairs))
    true, twin = scores[: len(data.captions)].view(-1, 1), scores[len(data.captions):].view(-1, k)
    return (true > twin).float().mean().item()


# ---- DiHT -----------------------------------------------------------------------------------------------------------

DIHT_VARIANTS = {  # name: (CAT filter, concept distillation, HN-NCE beta)
    "diht_full": (True, True, 0.5),
    "diht_infonce": (True, True, 0.0),
    "diht_no_cat": (False, True, 0.5),
    "diht_no_concepts": (True, False, 0.5),
}


def diht_args(profile: Profile, folder: Path, seed: int, beta: float, concepts: bool) -> DiHTTrainingArguments:
    return DiHTTrainingArguments(
        output_dir=str(folder), per_device_train_batch_size=profile.diht_batch, max_steps=profile.diht_steps,
        learning_rate=1e-3, weight_decay=0.1, warmup_steps=max(1, profile.diht_steps // 10),
        lr_scheduler_type="cosine", logging_steps=max(1, profile.diht_steps // 10), save_strategy="no",
        report_to="none", seed=seed, disable_tqdm=True, dataloader_pin_memory=False, hn_nce_alpha=1.0,
        hn_nce_beta=beta, concept_loss_weight=1.0 if concepts else 0.0)


def run_diht(profile: Profile, seed: int, teacher, work: Path, log) -> tuple[dict, dict, dict]:
    """The four DiHT variants of one seed, and the few-shot comparison on the full variant's model."""
    size = profile.image_size
    pool = build_relation_scenes(profile.diht_pool, image_size=2 * size, seed=1000 + seed,
                                 low_complexity_share=profile.noise_share, no_action_share=profile.noise_share,
                                 text_share=profile.noise_share)
    held_out = held_out_scenes(profile.num_eval, size, seed=2000 + seed)
    # Concepts on the whole pool (the no-CAT variant needs them too), then CAT: the same rows, filtered or not.
    labelled = curate(undecoded(pool, "image"), cat=False, teacher=teacher,
                      concept_options={"top_k": len(CONCEPTS), "return_scores": True, "activation": "sigmoid"},
                      num_proc=None)
    ocr = {"Det.limit_side_len": 3 * size, "Det.limit_type": "min", "Global.use_cls": False}
    # One process: forking after torch has run its thread pool (the teacher, concept labelling) can hang.
    filtered, report = cat_filter(labelled.dataset, ocr_params=ocr, num_proc=None)
    kinds = {kind: (pool["kind"].count(kind), filtered["kind"].count(kind)) for kind in sorted(set(pool["kind"]))}
    log(f"  seed {seed}: CAT kept {len(filtered)}/{len(pool)}; per kind (pool, kept) {kinds}")
    vocabulary = labelled.vocabulary
    words = [*pool["caption"], *held_out.captions, *(t for group in held_out.twins for t in group),
             *(CLASS_TEMPLATE.format(name) for name in relation_class_names())]
    tokenizer = build_word_tokenizer(words)
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    results, models = {}, {}
    for name, (cat, concepts, beta) in DIHT_VARIANTS.items():
        started = time.perf_counter()
        data = filtered if cat else labelled.dataset
        set_seed(seed)  # the same initial weights for every variant of this seed
        model = DiHTModel(tiny_diht_config(tokenizer, size, num_concepts=len(vocabulary) if concepts else 0,
                                           hn_nce_beta=beta, width=profile.diht_width))
        collator = diht_collator(tokenizer, image_processor, train_transform=diht_train_transform(size),
                                 num_concepts=len(vocabulary) if concepts else None, soft_concepts=True)
        trainer = DiHTTrainer(model=model, args=diht_args(profile, work / name, seed, beta, concepts),
                              train_dataset=data, data_collator=collator)
        trainer.train()
        model.eval()
        metrics = itc_metrics(model, tokenizer, image_processor, held_out)
        metrics["zero_shot_top1"] = zero_shot_top1(model, tokenizer, image_processor, held_out)
        metrics["train_pairs"] = len(data)
        metrics["seconds"] = time.perf_counter() - started
        results[name] = metrics
        models[name] = model
        log(f"  seed {seed} {name}: zero-shot {metrics['zero_shot_top1']:.3f}, R@1 {metrics['r1']:.3f}, "
            f"hard-negative {metrics['hard_negative_accuracy']:.3f} ({metrics['seconds']:.0f} s)")
    few_shot = run_few_shot(profile, seed, models["diht_full"], tokenizer, image_processor, held_out, work, log)
    cat_info = {"report": dict(report), "pool_and_kept_by_kind": kinds}
    return results, few_shot, cat_info


def run_few_shot(profile: Profile, seed: int, dual: DiHTModel, tokenizer, image_processor, held_out: HeldOut,
                 work: Path, log) -> dict:
    """Prompt-initialised few-shot (W₀ = the zero-shot classifier, δ-ball grid) against a linear probe from a random
    init (W₀ random and tiny, residual unconstrained), same shots, optimiser and steps (DiHT, arXiv 2301.02280 §4)."""
    names = relation_class_names()
    # A balanced pool: 2k images per class for the largest k (k training and k validation shots).
    pool = undecoded(build_relation_scenes(2 * max(profile.shots) * len(names), image_size=2 * profile.image_size,
                                           seed=3000 + seed, classes=list(range(len(names)))), "image")
    zero_shot = zero_shot_classifier(dual, tokenizer, names, [CLASS_TEMPLATE])  # (C, P)
    generator = torch.Generator().manual_seed(seed)
    random_init = 1e-3 * torch.nn.functional.normalize(torch.randn(zero_shot.shape, generator=generator), dim=-1)
    collator = ImageLabelCollator(image_processor)
    results = {}
    for shots in profile.shots:
        train_rows, validation_rows, _ = sample_shots(pool, label_column="label", image_column="image",
                                                      num_classes=len(names), shots=shots, seed=seed)
        train, validation = pool.select(train_rows), pool.select(validation_rows)

        def top1(model, dataset):
            return evaluate_image_classifier(model, image_processor, dataset).metrics["top1"]

        for name, weights, deltas, bias_deltas in (
            ("prompt_init", zero_shot, profile.few_shot_deltas, profile.few_shot_bias_deltas),
            ("linear_probe", random_init, (1e6,), (1e6,)),  # radii that never bind: an unconstrained probe
        ):
            base = DiHTForImageClassification.from_dual_encoder(dual, weights, names)
            training = TrainingArguments(
                output_dir=str(work / "few_shot"), optim="sgd", max_steps=20, per_device_train_batch_size=512,
                lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, logging_steps=5,
                save_strategy="no", report_to="none", seed=seed, remove_unused_columns=False,
                label_names=["labels"], disable_tqdm=True, dataloader_pin_memory=False,
                learning_rate=few_shot_learning_rate(base))
            search = few_shot_search(base, train, validate=lambda m, v=validation: top1(m, v), collator=collator,
                                     training=training, deltas=deltas, bias_deltas=bias_deltas)
            results[f"{name}_{shots}shot"] = top1(search.model, held_out.images)
        log(f"  seed {seed} {shots}-shot: prompt-init {results[f'prompt_init_{shots}shot']:.3f}, linear probe "
            f"{results[f'linear_probe_{shots}shot']:.3f}")
    return results


# ---- COSMO ----------------------------------------------------------------------------------------------------------

COSMO_VARIANTS = {  # name: (grouped batches, connection mining, ITC smoothing, ITC loss)
    "cosmo_random_itc": (False, False, 0.0, "itc"),
    "cosmo_grit": (True, False, 0.0, "itc"),
    "cosmo_grit_ecm": (True, True, 0.0, "itc"),
    "cosmo_grit_ecm_sitc": (True, True, 0.5, "itc"),
    "cosmo_grit_ecm_hn_nce": (True, True, 0.0, "hn_nce"),
}


def cosmo_data(profile: Profile, seed: int):
    train = build_relation_scenes(profile.cosmo_images, captions_per_image=2, image_size=2 * profile.image_size,
                                  seed=4000 + seed)
    train = undecoded(train, "image").remove_columns(["kind", "concept_ids"])
    return train.add_column("index", list(range(len(train))))


def cosmo_tokenizer():
    scenes = build_relation_scenes(200, captions_per_image=4, image_size=8, seed=0, with_twins=True)
    words = [*scenes["caption"], *(t for group in scenes["twin_captions"] for t in group),
             *(CLASS_TEMPLATE.format(name) for name in relation_class_names())]
    return build_wordpiece_tokenizer(words)


def run_cosmo(profile: Profile, seed: int, discriminator: str, tokenizer, image_processor, work: Path,
              log) -> dict:
    """The five COSMO variants of one seed."""
    size = profile.image_size
    train = cosmo_data(profile, seed)
    labels = train["label"]
    held_out = held_out_scenes(profile.num_eval, size, seed=5000 + seed)
    results = {}
    for name, (grouped, mining, smoothing, itc_loss) in COSMO_VARIANTS.items():
        started = time.perf_counter()
        args = CosmoTrainingArguments(
            output_dir=str(work / name), per_device_train_batch_size=profile.cosmo_batch,
            num_train_epochs=profile.cosmo_epochs, learning_rate=1e-3, weight_decay=0.02, warmup_steps=20,
            lr_scheduler_type="cosine", logging_steps=10, save_strategy="no", report_to="none", seed=seed,
            disable_tqdm=True, dataloader_pin_memory=False, grouped_batches=grouped, connection_mining=mining,
            discriminator=discriminator if mining else None, itc_smoothing=smoothing, ecm_history=10**7)
        data = train  # with `image_id`: HN-NCE as the ITC term keeps one positive per row, ITM never pairs an image
        # with its own other caption as a negative
        set_seed(seed)
        model = CosmoForPreTraining(tiny_cosmo_config(tokenizer, size, itc_loss=itc_loss))
        collator = ImageTextCollator(tokenizer, image_processor, train_transform=cosmo_train_transform(size),
                                     add_ons=[MaskedCaptions(tokenizer, model.config.mlm_probability, seed=seed)],
                                     top_up=not grouped, seed=seed)
        trainer = CosmoTrainer(model=model, args=args, train_dataset=data, data_collator=collator)
        trainer.train()
        model.eval()
        metrics = itc_metrics(model, tokenizer, image_processor, held_out)
        metrics["itm_accuracy"] = itm_accuracy(model, tokenizer, image_processor, held_out)
        metrics["zero_shot_top1"] = zero_shot_top1(model, tokenizer, image_processor, held_out)
        if trainer.miner is not None:
            quality = mining_quality(trainer.miner.records, lambda image, text: labels[image] == labels[text])
            metrics.update({f"ecm_{key}": value for key, value in quality.items()})
        metrics["seconds"] = time.perf_counter() - started
        results[name] = metrics
        extra = (f", ECM precision {metrics['ecm_precision']:.3f} (chance {metrics['ecm_chance_precision']:.3f}) "
                 f"recall {metrics['ecm_recall']:.3f}" if mining else "")
        log(f"  seed {seed} {name}: R@1 {metrics['r1']:.3f}, hard-negative {metrics['hard_negative_accuracy']:.3f}, "
            f"ITM {metrics['itm_accuracy']:.3f}{extra} ({metrics['seconds']:.0f} s)")
    return results


# ---- the table ------------------------------------------------------------------------------------------------------

# component, variant, baseline, metrics (the first decides the direction), what the paper claims
ROWS = [
    ("HN-NCE (β = 0.5)", "diht_full", "diht_infonce", ["hard_negative_accuracy", "r1"],
     "DiHT §3.3: up-weighting hard negatives improves fine-grained retrieval"),
    ("CAT filter", "diht_full", "diht_no_cat", ["zero_shot_top1", "r1"],
     "DiHT §3.1: removing low-complexity, action-less and text-in-image pairs improves zero-shot"),
    ("concept distillation", "diht_full", "diht_no_concepts", ["zero_shot_top1"],
     "DiHT §3.2: teacher concepts add supervision and improve zero-shot"),
    ("prompt-initialised few-shot", "prompt_init", "linear_probe", ["{k}shot"],
     "DiHT §4: prompt initialisation beats a linear probe at few shots"),
    ("GRIT grouped batches", "cosmo_grit", "cosmo_random_itc", ["hard_negative_accuracy", "itm_accuracy"],
     "GRIT-VLP: grouped batches give harder in-batch negatives, a better ITM and finer ITC"),
    ("ECM", "cosmo_grit_ecm", "cosmo_grit", ["r1"],
     "COSMO: converting mined false negatives into positives improves retrieval"),
    ("S-ITC (ε = 0.5)", "cosmo_grit_ecm_sitc", "cosmo_grit_ecm", ["r1"],
     "COSMO: smoothing the ITC targets (with GRIT + ECM) improves retrieval"),
    ("HN-NCE as COSMO's ITC", "cosmo_grit_ecm_hn_nce", "cosmo_grit_ecm_sitc", ["r1"],
     "no paper: DiHT's HN-NCE in place of S-ITC (GRIT + ECM in both)"),
]


def direction(difference: dict) -> str:
    """Which side the first metric's paired difference favours, and whether its 95% CI excludes 0."""
    interval = difference.get("ci95")
    if interval is None:
        return "variant ahead (1 seed)" if difference["mean"] > 0 else "baseline ahead or tie (1 seed)"
    if interval[0] > 0:
        return "variant ahead, CI excludes 0"
    if interval[1] < 0:
        return "baseline ahead, CI excludes 0"
    return "no significant difference"


def build_rows(per_seed: dict[str, list[dict]], profile: Profile, specs: list[tuple]) -> list[dict]:
    """Per row of `specs` (see `ROWS`): each metric's variant and baseline summaries and their paired difference."""
    rows = []
    for component, variant, baseline, metrics, claim in specs:
        if "{k}shot" in metrics:
            metrics = [f"{k}shot" for k in profile.shots]
            values = {key: [seed[f"{variant}_{key}"] for seed in per_seed["few_shot"]] for key in metrics}
            base = {key: [seed[f"{baseline}_{key}"] for seed in per_seed["few_shot"]] for key in metrics}
        else:
            values = {key: [seed[variant][key] for seed in per_seed["runs"]] for key in metrics}
            base = {key: [seed[baseline][key] for seed in per_seed["runs"]] for key in metrics}
        row = {"component": component, "variant": variant, "baseline": baseline, "claim": claim, "metrics": {}}
        for key in metrics:
            row["metrics"][key] = {"variant": summary(values[key]), "baseline": summary(base[key]),
                                   "difference": paired(values[key], base[key])}
        row["direction"] = direction(row["metrics"][metrics[0]]["difference"])
        if variant == "cosmo_grit_ecm":
            row["ecm"] = {key: summary([seed[variant][f"ecm_{key}"] for seed in per_seed["runs"]])
                          for key in ("precision", "recall", "chance_precision")}
        rows.append(row)
    return rows


def percent(stats: dict) -> str:
    std = f" ± {100 * stats['std']:.1f}" if stats.get("std") is not None else ""
    return f"{100 * stats['mean']:.1f}{std}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| component | metric | variant | baseline | paired diff (pp) [95% CI] | direction |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        for position, (key, stats) in enumerate(row["metrics"].items()):
            diff = stats["difference"]
            interval = (f" [{100 * diff['ci95'][0]:+.1f}, {100 * diff['ci95'][1]:+.1f}]" if diff.get("ci95")
                        else "")
            first = position == 0
            lines.append(f"| {row['component'] if first else ''} | {key} | {percent(stats['variant'])} | "
                         f"{percent(stats['baseline'])} | {100 * diff['mean']:+.1f}{interval} | "
                         f"{row['direction'] if first else ''} |")
        if "ecm" in row:
            ecm = row["ecm"]
            lines.append(f"| | ECM precision / recall (chance precision) | {percent(ecm['precision'])} / "
                         f"{percent(ecm['recall'])} ({percent(ecm['chance_precision'])}) | – | | |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, means, errors = [], [], []
    for row in rows:
        for key, stats in row["metrics"].items():
            diff = stats["difference"]
            labels.append(f"{row['component']}: {key}")
            means.append(100 * diff["mean"])
            errors.append(100 * (diff["ci95"][1] - diff["mean"]) if diff.get("ci95") else 0.0)
    figure, axis = plt.subplots(figsize=(9, 0.42 * len(labels) + 1.2))
    positions = range(len(labels))[::-1]
    colours = ["tab:green" if m > 0 else "tab:red" for m in means]
    axis.barh(list(positions), means, xerr=errors, color=colours, alpha=0.8, capsize=3)
    axis.set_yticks(list(positions), labels, fontsize=8)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_xlabel("variant − baseline, percentage points (mean over seeds, 95% CI)")
    axis.set_title("Ablations: each component against its baseline (paired by seed)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    # 1. Arguments: the profile (full or quick), seeds, output folder.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 seed (the test suite's run)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1 2; --quick: 0)")
    parser.add_argument("--output_dir", default="outputs/ablations")
    parser.add_argument("--recipes", nargs="+", default=["diht", "cosmo"], choices=["diht", "cosmo"])
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="override profile fields, e.g. diht_steps=2000 shots=1,2 (a diagnostic run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the models are tiny, and "
                        "two threads stall for seconds per step whenever another process takes a core)")
    options = parser.parse_args(argv)
    profile = QUICK if options.quick else Profile()
    if options.seeds:
        profile = replace(profile, seeds=tuple(options.seeds))
    for assignment in options.set:
        field, _, value = assignment.partition("=")
        current = getattr(profile, field)  # an unknown field is an AttributeError naming it
        parsed = (tuple(type(current[0])(v) for v in value.split(",")) if isinstance(current, tuple)
                  else type(current)(value))
        profile = replace(profile, **{field: parsed})
    if options.threads:
        torch.set_num_threads(options.threads)
    output_dir = Path(options.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    per_seed = {"runs": [{} for _ in profile.seeds], "few_shot": [{} for _ in profile.seeds]}
    extras: dict = {"cat": {}}
    with tempfile.TemporaryDirectory(prefix="ablations_") as scratch:
        work = Path(scratch)
        # 2. DiHT: one frozen concept teacher for all seeds (it is the paper's fixed strong model, not ablated).
        if "diht" in options.recipes:
            log("DiHT: training the concept teacher")
            teacher = train_relation_teacher(profile.image_size, steps=profile.teacher_steps, seed=0)
            for i, seed in enumerate(profile.seeds):
                runs, few_shot, cat_info = run_diht(profile, seed, teacher, work / f"diht_{seed}", log)
                per_seed["runs"][i].update(runs)
                per_seed["few_shot"][i].update(few_shot)
                extras["cat"][seed] = cat_info
        # 3. COSMO: one frozen discriminator for all seeds (the paper's fixed pre-trained ITM model), then the
        #    variants of every seed.
        if "cosmo" in options.recipes:
            tokenizer = cosmo_tokenizer()
            image_processor = cosmo_image_processor(profile.image_size)
            log("COSMO: training the discriminator")
            scenes = build_relation_scenes(profile.discriminator_images, captions_per_image=2,
                                           image_size=2 * profile.image_size, seed=999)
            scenes = undecoded(scenes, "image").remove_columns(["kind", "concept_ids"])
            discriminator = str(train_demo_discriminator(
                scenes, work, tokenizer, image_processor, image_size=profile.image_size,
                epochs=profile.discriminator_epochs, batch_size=profile.cosmo_batch, seed=0,
                dataloader_pin_memory=False))
            for i, seed in enumerate(profile.seeds):
                per_seed["runs"][i].update(run_cosmo(profile, seed, discriminator, tokenizer, image_processor,
                                                     work / f"cosmo_{seed}", log))

    # 4. The table: paired differences per row, the JSON, the chart.
    ran = set(per_seed["runs"][0]) | ({"prompt_init", "linear_probe"} if per_seed["few_shot"][0] else set())
    rows = build_rows(per_seed, profile, [spec for spec in ROWS if spec[1] in ran and spec[2] in ran])
    results = {
        "command": " ".join(["python", "benchmarks/ablations.py", *(argv if argv is not None else sys.argv[1:])]),
        "profile": asdict(profile),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_average_at_end": os.getloadavg()},
        "seconds": time.perf_counter() - started,
        "rows": rows,
        "per_seed": {"seeds": list(profile.seeds), **per_seed},
        "cat": extras["cat"],
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    if rows:
        plot(rows, output_dir / "ablations.png")
    print(markdown_table(rows))
    print(f"{len(profile.seeds)} seed(s), {results['seconds'] / 60:.1f} min; results.json and ablations.png in "
          f"{output_dir}")
    return results


if __name__ == "__main__":
    main()
