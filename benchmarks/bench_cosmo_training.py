"""COSMO training benchmarks: what connection mining and GRIT grouping cost per step; prints JSON.

(a) ECM overhead (COSMO, arXiv 2312.06112, efficient connection mining; about 17% of wall clock over GRIT-VLP in the
    paper's setting). The same `trainers.CosmoTrainer` optimizer step (ITC + ITM + MLM, AdamW) three ways, on the
    same batches, with a discriminator of the student's architecture (as the official code's fine-tuned ALBEF/GRIT
    discriminator):
    - `none`: no mining (ITM on the hardest in-batch negatives);
    - `uncached`: ECM as the paper runs it, the discriminator's unimodal encoders on every step's crops;
    - `cached`: ECM with `ecm_cache_unimodal=True`, the discriminator's image and text states kept per row after its
      first step (the first epoch fills the cache and is not timed), so only its fusion layers run.
    Step times come from a callback at the Trainer's step boundaries; the three runs alternate in rounds so that
    machine noise hits them alike, and the median per step is reported.
(b) GRIT grouping (GRIT-VLP, arXiv 2208.04060): the time `GroupedMiniBatchSampler` spends grouping one full buffer
    (48,000 pairs in search spaces of 1,920, the papers' figures for a 128-pair batch) and its amortised cost over
    the 375 steps it serves; and, with the same ratios at the benchmark's batch (375 B pairs, spaces of 15 B), its
    share of the wall time of the steps it serves, from the measured step time.

    python benchmarks/bench_cosmo_training.py                      # 256-wide, 128 px, batch 32 (CPU: minutes)
    python benchmarks/bench_cosmo_training.py --width 768 --heads 12 --image_size 256 --batch 32   # base sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from image_text_data import undecoded
from image_text_data.demo import build_grouped_scenes, build_wordpiece_tokenizer
from modeling_cosmo import CosmoConfig, CosmoForImageTextRetrieval, CosmoForPreTraining, cosmo_image_processor
from trainers import (
    CosmoDiscriminator,
    CosmoTrainer,
    CosmoTrainingArguments,
    GroupedMiniBatchSampler,
    ImageTextCollator,
    MaskedCaptions,
)


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, from the Trainer's step-begin to its step-end event."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def config_for(tokenizer, args) -> CosmoConfig:
    layers = {"hidden_size": args.width, "intermediate_size": 4 * args.width, "num_attention_heads": args.heads}
    return CosmoConfig(
        text_config={**layers, "num_hidden_layers": args.text_layers, "fusion_layer": args.text_layers // 2,
                     "vocab_size": len(tokenizer), "max_position_embeddings": 40},
        vision_config={**layers, "num_hidden_layers": args.vision_layers, "image_size": args.image_size,
                       "patch_size": args.patch_size},
        embed_dim=256,
    )


def ecm_overhead(args) -> dict:
    scenes = build_grouped_scenes(args.batch * args.batches_per_epoch // 2, image_size=args.image_size, seed=0)
    data = undecoded(scenes, "image")
    data = data.add_column("index", list(range(len(data))))
    tokenizer = build_wordpiece_tokenizer(list(data["caption"]))
    processor = cosmo_image_processor(args.image_size)
    torch.manual_seed(0)
    config = config_for(tokenizer, args)
    student = CosmoForPreTraining(config)
    discriminator_model = CosmoForImageTextRetrieval(config)
    discriminators = {"uncached": CosmoDiscriminator(discriminator_model),
                      "cached": CosmoDiscriminator(discriminator_model, cache_unimodal=True)}
    collator = ImageTextCollator(tokenizer, processor, add_ons=[MaskedCaptions(tokenizer, seed=0)])
    timers = {mode: StepTimer() for mode in ("none", "uncached", "cached")}
    output = tempfile.mkdtemp()

    def run(mode: str, steps: int, timed: bool) -> None:
        training = CosmoTrainingArguments(
            output_dir=output, per_device_train_batch_size=args.batch, max_steps=steps, learning_rate=1e-4,
            save_strategy="no", report_to="none", logging_steps=10_000, disable_tqdm=True, use_cpu=not args.cuda,
            dataloader_pin_memory=False, grouped_batches=False, connection_mining=mode != "none",
            bf16=args.bf16, seed=0)
        trainer = CosmoTrainer(model=student, args=training, train_dataset=data, data_collator=collator,
                               discriminator=discriminators.get(mode), callbacks=[timers[mode]] if timed else None)
        trainer.remove_callback(PrinterCallback)  # stdout carries the JSON only
        trainer.train()

    run("cached", args.batches_per_epoch, timed=False)  # fills the cache (every row's first step)
    for mode in timers:  # warm-up
        run(mode, 1, timed=False)
    for _ in range(args.rounds):
        for mode in timers:
            run(mode, args.steps, timed=True)
    medians = {mode: statistics.median(timer.times) for mode, timer in timers.items()}
    return {
        "step_seconds_median": {mode: round(value, 4) for mode, value in medians.items()},
        "steps_timed": {mode: len(timer.times) for mode, timer in timers.items()},
        "overhead_uncached": round(medians["uncached"] / medians["none"] - 1, 4),
        "overhead_cached": round(medians["cached"] / medians["none"] - 1, 4),
        "discriminator_unimodal_rows": {mode: d.unimodal_calls for mode, d in discriminators.items()},
    }


def grouping_time(buffer: int, search_space: int, batch: int, dim: int = 256) -> dict:
    sampler = GroupedMiniBatchSampler(buffer, batch, buffer_size=buffer, search_space=search_space)
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(buffer, dim, generator=generator), dim=-1)
    texts = F.normalize(images + 0.5 * torch.randn(buffer, dim, generator=generator), dim=-1)
    for start in range(0, buffer - batch, batch):  # everything but the last batch: no grouping yet
        sampler.observe(torch.arange(start, start + batch), images[start:start + batch], texts[start:start + batch])
    last = slice(buffer - batch, buffer)
    begin = time.perf_counter()
    sampler.observe(torch.arange(buffer - batch, buffer), images[last], texts[last])  # fills it: the grouping
    seconds = time.perf_counter() - begin
    steps = buffer // batch
    return {"buffer": buffer, "search_space": search_space, "batch": batch, "grouping_seconds":
            round(seconds, 3), "steps_served": steps, "amortised_ms_per_step": round(1000 * seconds / steps, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vision_layers", type=int, default=4)
    parser.add_argument("--text_layers", type=int, default=6)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--patch_size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches_per_epoch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--grit_buffer", type=int, default=48_000)
    parser.add_argument("--grit_search_space", type=int, default=1_920)
    parser.add_argument("--skip_ecm", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if args.cuda else None},
               "sizes": {k: getattr(args, k) for k in ("width", "heads", "vision_layers", "text_layers", "image_size",
                                                        "patch_size", "batch", "bf16")}}
    # The papers' buffer (48,000 pairs, search spaces of 1,920, at B = 128), and the same ratios at this batch size
    # (375 B and 15 B, the sampler's defaults), whose share of the steps it serves uses the measured step time.
    results["grouping"] = grouping_time(args.grit_buffer, args.grit_search_space, 128)
    results["grouping_at_this_batch"] = grouping_time(375 * args.batch, 15 * args.batch, args.batch)
    if not args.skip_ecm:
        results["ecm"] = ecm_overhead(args)
        step = results["ecm"]["step_seconds_median"]["none"]
        scaled = results["grouping_at_this_batch"]
        scaled["share_of_the_steps_it_serves"] = round(scaled["grouping_seconds"] / (scaled["steps_served"] * step), 5)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
