"""Tiny models for the built-in demos and the ablation benchmark: configs that train from scratch on a CPU in minutes.

- `tiny_diht_config`: a DiHT dual encoder (arXiv 2301.02280) with two narrow layers per tower on 4-px patches;
- `tiny_cosmo_config`: a COSMO/ALBEF model (arXiv 2312.06112, arXiv 2107.07651) with a 2-layer ViT and 4 text layers
  of which the last 2 fuse;
- `train_demo_discriminator`: a frozen ITM model for COSMO's connection mining, trained first on scenes of its own
  (the stand-in for the strong pre-trained ITM model ECM needs, which cannot be downloaded here).

The sizes are the demos' (`examples/pretrain.py`, `examples/pretrain_cosmo.py`), not the papers'.
"""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed

from modeling_cosmo import CosmoConfig, CosmoForPreTraining
from modeling_diht import DiHTConfig

from .collators import ImageTextCollator
from .cosmo import CosmoTrainer, CosmoTrainingArguments, MaskedCaptions, cosmo_train_transform

__all__ = ["tiny_cosmo_config", "tiny_diht_config", "train_demo_discriminator"]


def tiny_diht_config(tokenizer, image_size: int, *, num_concepts: int = 0, hn_nce_alpha: float = 1.0,
                     hn_nce_beta: float = 0.5, width: int = 128, layers: int = 2, patch_size: int = 4,
                     projection_dim: int = 64) -> DiHTConfig:
    """A tiny DiHT (arXiv 2301.02280): `layers` layers of `width` in each tower (4 heads, MLP 4x), `patch_size`-px
    patches, the tokenizer's vocabulary and context, and a concept head of `num_concepts` outputs when non-zero.

    The defaults are the DiHT demo's (`examples/pretrain.py`): width 128, 2 layers, 4-px patches, projection 64.
    """
    tower = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers,
             "num_attention_heads": 4}
    return DiHTConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "max_position_embeddings": tokenizer.model_max_length,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={**tower, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim, hn_nce_alpha=hn_nce_alpha, hn_nce_beta=hn_nce_beta,
        concept_head_sizes={"concepts": num_concepts} if num_concepts else None,
    )


def tiny_cosmo_config(tokenizer, image_size: int, width: int = 64, **overrides) -> CosmoConfig:
    """The COSMO demo's model (arXiv 2312.06112): a 2-layer ViT on 4-px patches, 4 text layers of which the last 2
    fuse, no dropout, weights initialised with std 1/sqrt(width) (BERT's and ViT's 0.02 suit width 768-1024; a narrow
    model trained from scratch learns several times slower with it). `overrides` set other config fields (`itc_loss`,
    `hard_negative_mode`, ...)."""
    init = {"hidden_size": width, "intermediate_size": 4 * width, "num_attention_heads": 4,
            "initializer_range": width**-0.5}
    return CosmoConfig(
        text_config={**init, "num_hidden_layers": 4, "fusion_layer": 2, "vocab_size": len(tokenizer),
                     "max_position_embeddings": tokenizer.model_max_length, "pad_token_id": tokenizer.pad_token_id,
                     "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        vision_config={**init, "num_hidden_layers": 2, "image_size": image_size, "patch_size": 4},
        embed_dim=32, initializer_range=width**-0.5, **overrides,
    )


def train_demo_discriminator(scenes, folder: str | Path, tokenizer, image_processor, *, image_size: int,
                             epochs: float = 30, batch_size: int = 32, learning_rate: float = 1e-3,
                             weight_decay: float = 0.02, seed: int = 0, width: int = 64,
                             disable_tqdm: bool = True, **training_kwargs) -> Path:
    """Train and save a discriminator for COSMO's connection mining (arXiv 2312.06112, ECM) on `scenes`.

    A tiny COSMO model trained with ITC + ITM + MLM on random batches, where every caption is a positive of every
    image of its class (the `label` column becomes the `image_id`), and with uniformly drawn ITM negatives
    (`hard_negative_mode="random"`): a matcher calibrated over all pairs. Trained on the hardest negatives only, a
    model this small from scratch predicts the ITM class prior for every pair for hundreds of steps. A real run uses a
    pre-trained ITM model instead (a COSMO/ALBEF checkpoint, or BLIP).

    Args:
        scenes: rows with `image` (undecoded or PIL), `caption` and `label` (the many-to-many match key).
        folder: where `discriminator/` (the saved model) and the Trainer's scratch folder go.
        tokenizer, image_processor: the student's (a BERT WordPiece tokenizer, `cosmo_image_processor`).
        image_size: the model's input side.
        epochs, batch_size, learning_rate, weight_decay, seed: of the training run.
        width: of `tiny_cosmo_config`.
        disable_tqdm, training_kwargs: more `CosmoTrainingArguments`.

    Returns:
        The folder of the saved discriminator (a `CosmoForPreTraining` checkpoint for `--discriminator`).
    """
    folder = Path(folder)
    drop = [c for c in ("image_id", "index") if c in scenes.column_names]
    scenes = scenes.remove_columns(drop).rename_column("label", "image_id")
    scenes = scenes.add_column("index", list(range(len(scenes))))
    args = CosmoTrainingArguments(
        output_dir=str(folder / "discriminator_run"), per_device_train_batch_size=batch_size,
        num_train_epochs=epochs, learning_rate=learning_rate, warmup_steps=20, weight_decay=weight_decay,
        lr_scheduler_type="cosine", save_strategy="no", report_to="none", seed=seed, disable_tqdm=disable_tqdm,
        grouped_batches=False, connection_mining=False, itc_smoothing=0.0, **training_kwargs,
    )
    set_seed(seed)
    model = CosmoForPreTraining(tiny_cosmo_config(tokenizer, image_size, width, hard_negative_mode="random"))
    collator = ImageTextCollator(tokenizer, image_processor,
                                 train_transform=cosmo_train_transform(image_size, scale=(0.8, 1.0)),
                                 add_ons=[MaskedCaptions(tokenizer, model.config.mlm_probability, seed=seed)],
                                 top_up=False, seed=seed)
    trainer = CosmoTrainer(model=model, args=args, train_dataset=scenes, data_collator=collator)
    trainer.train()
    path = folder / "discriminator"
    trainer.save_model(str(path))
    trainer.accelerator.wait_for_everyone()  # every process loads it next
    return path
