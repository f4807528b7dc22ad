"""Training-step throughput of `DiHTTrainer` vs open_clip's own training step, and HN-NCE vs InfoNCE in the trainer.

Both train the same architecture from the same random weights on the same batch, with the same AdamW:

- ours: `DiHTTrainer.train()` as a user runs it (data loader, collator, `training_step`, optimizer and scheduler
  step, logit-scale clamp, loss-term logging), timed per optimizer step by a callback;
- open_clip: the loop body of `open_clip_train.train_one_epoch` (zero_grad, `encode_image`/`encode_text`,
  `ClipLoss`, backward, `optimizer.step()`, logit-scale clamp), timed per step.

Blocks of steps of each variant alternate, so that machine noise hits all alike; the figure is the median step.

    python benchmarks/bench_trainer.py --model ViT-B-32 --batch 32 --steps 3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time

import open_clip
import torch
from bench_model import build_pair
from torch.utils.data import Dataset
from transformers import TrainerCallback

from trainers import DiHTTrainer, DiHTTrainingArguments


class Rows(Dataset):
    def __init__(self, length: int):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return {"index": index}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def trainer_block(model, batch, beta: float, steps: int, output_dir: str) -> list[float]:
    """`steps` optimizer steps of DiHTTrainer; returns the time of each."""
    args = DiHTTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=len(batch["input_ids"]), max_steps=steps,
        learning_rate=1e-5, weight_decay=0.2, warmup_steps=0, hn_nce_alpha=1.0, hn_nce_beta=beta,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=False,
    )
    timer = StepTimer()
    trainer = DiHTTrainer(model=model, args=args, train_dataset=Rows(steps * len(batch["input_ids"])),
                          data_collator=lambda rows: dict(batch), callbacks=[timer])
    trainer.train()
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="steps per block (the first of each block is dropped)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    ours, theirs = build_pair(args.model, 0.5, args.device, "sdpa")
    image_size = ours.config.vision_config.image_size
    pixels = torch.randn(args.batch, 3, image_size, image_size, device=args.device)
    tokens = open_clip.get_tokenizer(args.model)([f"a photo of object number {i}" for i in range(args.batch)])
    batch = {"input_ids": tokens.to(args.device), "pixel_values": pixels}

    clip_loss = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(theirs.parameters(), lr=1e-5, weight_decay=0.2)

    def open_clip_step():
        optimizer.zero_grad(set_to_none=True)
        image = theirs.encode_image(pixels, normalize=True)
        text = theirs.encode_text(batch["input_ids"], normalize=True)
        clip_loss(image, text, theirs.logit_scale.exp()).backward()
        optimizer.step()
        with torch.no_grad():
            theirs.logit_scale.clamp_(0, math.log(100))

    times = {"diht_trainer_hn_nce": [], "diht_trainer_infonce": [], "open_clip": []}
    with tempfile.TemporaryDirectory() as output_dir:
        for _ in range(args.rounds):
            times["diht_trainer_hn_nce"] += trainer_block(ours, batch, 0.5, args.steps, output_dir)[1:]
            times["diht_trainer_infonce"] += trainer_block(ours, batch, 0.0, args.steps, output_dir)[1:]
            block = []
            for _ in range(args.steps):
                start = time.perf_counter()
                open_clip_step()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                block.append(time.perf_counter() - start)
            times["open_clip"] += block[1:]

    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "model": args.model, "batch": args.batch, "device": args.device, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "open_clip": open_clip.__version__,
        "machine": platform.processor() or platform.machine(), "steps_timed": len(times["open_clip"]),
        **{f"{name}_samples_per_s": args.batch / value for name, value in median.items()},
        "throughput_ratio_trainer_over_open_clip": median["open_clip"] / median["diht_trainer_hn_nce"],
        "hn_nce_overhead_of_step": median["diht_trainer_hn_nce"] / median["diht_trainer_infonce"] - 1,
    }
    print(f"{args.model} batch {args.batch} on {args.device}: DiHTTrainer (HN-NCE) "
          f"{result['diht_trainer_hn_nce_samples_per_s']:.2f} samples/s, open_clip "
          f"{result['open_clip_samples_per_s']:.2f} samples/s, ratio "
          f"{result['throughput_ratio_trainer_over_open_clip']:.3f}; HN-NCE step vs InfoNCE step "
          f"{100 * result['hn_nce_overhead_of_step']:+.2f}%")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
