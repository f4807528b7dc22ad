"""Pre-train a DiHT model with the HN-NCE loss (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

With no arguments it builds a small dataset of rendered coloured shapes (`synthetic_scenes.py`), trains a tiny DiHT
model on CPU with `transformers.Trainer` for a few minutes, and reports zero-shot classification and retrieval on
held-out images against chance:

    python examples/pretrain.py                       # writes outputs/pretrain/{results.json, model/}

This is the smallest honest version of the recipe: HN-NCE on the local batch. Global-batch HN-NCE across
processes, concept distillation, CAT filtering, real datasets and DeepSpeed arrive with the training issue.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPImageProcessor, HfArgumentParser, PreTrainedTokenizerFast, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_scenes import CLASS_PROMPT, build_scenes, class_names  # noqa: E402

from modeling_diht import DiHTConfig, DiHTModel  # noqa: E402

SOT, EOT, PAD, UNK = "<|startoftext|>", "<|endoftext|>", "<pad>", "<unk>"


@dataclass
class DemoArguments:
    num_train: int = field(default=4000, metadata={"help": "training pairs generated"})
    num_eval: int = field(default=500, metadata={"help": "held-out pairs for zero-shot and retrieval"})
    image_size: int = field(default=32, metadata={"help": "side of the rendered images"})
    hn_nce_alpha: float = field(default=1.0, metadata={"help": "HN-NCE α (1 with β=0 is CLIP's InfoNCE)"})
    hn_nce_beta: float = field(default=0.5, metadata={"help": "HN-NCE β, hardness of the negative weighting"})


def build_word_tokenizer(texts: list[str], max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the demo captions, with CLIP's start/end tokens and padding id 0 (offline)."""
    words = sorted({word for text in texts for word in text.lower().split()})
    vocab = {token: i for i, token in enumerate([PAD, UNK, SOT, EOT, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=SOT, eos_token=EOT, pad_token=PAD, unk_token=UNK,
        model_max_length=max_length, do_lower_case=True,
    )


def tiny_diht_config(tokenizer: PreTrainedTokenizerFast, image_size: int, alpha: float, beta: float) -> DiHTConfig:
    tower = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}
    return DiHTConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "max_position_embeddings": tokenizer.model_max_length,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={**tower, "image_size": image_size, "patch_size": 4},
        projection_dim=64,
        hn_nce_alpha=alpha,
        hn_nce_beta=beta,
    )


class PairCollator:
    """Turns rows of (image, caption) into model inputs; `return_loss=True` makes the model compute HN-NCE."""

    def __init__(self, tokenizer, image_processor):
        self.tokenizer, self.image_processor = tokenizer, image_processor

    def __call__(self, rows: list[dict]) -> dict:
        text = self.tokenizer([row["caption"] for row in rows], padding=True, return_tensors="pt")
        pixels = self.image_processor([row["image"] for row in rows], return_tensors="pt")["pixel_values"]
        return {**text, "pixel_values": pixels, "return_loss": True}


@torch.no_grad()
def evaluate_zero_shot(model, tokenizer, image_processor, dataset) -> dict[str, float]:
    """Zero-shot top-1 over the colour-shape classes, and image↔caption retrieval R@1 on held-out pairs."""
    model.eval()
    names = class_names()
    prompts = tokenizer([CLASS_PROMPT.format(color=n.split()[0], shape=n.split()[1]) for n in names],
                        padding=True, return_tensors="pt")
    classifier = F.normalize(model.get_text_features(**prompts).pooler_output, dim=-1)  # (C, P)
    pixels = image_processor(list(dataset["image"]), return_tensors="pt")["pixel_values"]
    images = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)  # (N, P)
    captions = tokenizer(list(dataset["caption"]), padding=True, return_tensors="pt")
    texts = F.normalize(model.get_text_features(**captions).pooler_output, dim=-1)  # (N, P)
    labels = torch.tensor(dataset["label"])
    similarity = images @ texts.t()  # (N, N); several captions can describe the same class
    same_class = labels[:, None] == labels[None, :]
    hit_i2t = same_class[torch.arange(len(labels)), similarity.argmax(dim=1)]
    hit_t2i = same_class[similarity.argmax(dim=0), torch.arange(len(labels))]
    return {
        "zero_shot_top1": ((images @ classifier.t()).argmax(dim=1) == labels).float().mean().item(),
        "chance_top1": 1.0 / len(names),
        "retrieval_r1_image_to_text": hit_i2t.float().mean().item(),
        "retrieval_r1_text_to_image": hit_t2i.float().mean().item(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((DemoArguments, TrainingArguments))
    defaults = ["--output_dir", "outputs/pretrain", "--per_device_train_batch_size", "64", "--max_steps", "400",
                "--learning_rate", "1e-3", "--weight_decay", "0.1", "--warmup_steps", "40", "--logging_steps", "20",
                "--lr_scheduler_type", "cosine", "--save_strategy", "no", "--report_to", "none",
                "--remove_unused_columns", "false", "--dataloader_drop_last", "true", "--seed", "0",
                "--dataloader_pin_memory", str(torch.cuda.is_available()).lower()]
    demo, training = parser.parse_args_into_dataclasses(args=defaults + list(sys.argv[1:] if argv is None else argv))

    train = build_scenes(demo.num_train, image_size=demo.image_size, seed=training.seed)
    held_out = build_scenes(demo.num_eval, image_size=demo.image_size, seed=training.seed + 1)
    tokenizer = build_word_tokenizer([*train["caption"], CLASS_PROMPT])
    image_processor = CLIPImageProcessor(size={"shortest_edge": demo.image_size},
                                         crop_size={"height": demo.image_size, "width": demo.image_size})
    torch.manual_seed(training.seed)
    model = DiHTModel(tiny_diht_config(tokenizer, demo.image_size, demo.hn_nce_alpha, demo.hn_nce_beta))

    trainer = Trainer(model=model, args=training, train_dataset=train,
                      data_collator=PairCollator(tokenizer, image_processor))
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    results = evaluate_zero_shot(model, tokenizer, image_processor, held_out)
    results |= {"train_loss_first": losses[0], "train_loss_last": losses[-1]}

    output_dir = Path(training.output_dir)
    model.save_pretrained(output_dir / "model")
    tokenizer.save_pretrained(output_dir / "model")
    image_processor.save_pretrained(output_dir / "model")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"zero-shot top-1 {results['zero_shot_top1']:.1%} vs chance {results['chance_top1']:.1%}; "
          f"model and results in {output_dir}")
    return results


if __name__ == "__main__":
    main()
