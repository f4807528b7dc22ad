"""COSMO model benchmarks, ours vs torchmultimodal's ALBEF modules, side by side in one process; prints JSON.

(a) Local training step: forward + backward of ITC (S-ITC, ε = 0.5) + ITM (B positives, 2B argmax hard negatives,
    one cross-entropy) + MLM (all layers with the image, vocabulary projection at the masked positions only, in
    both). Ours is `CosmoForPreTraining(..., return_loss=True)` (SDPA attention, one cross-attention key/value
    projection per image shared by the ITM and MLM rows); the peer is the same work written with torchmultimodal's
    `ALBEFVisionEncoder`, `bert_text_encoder`, `ALBEFMultimodalEncoder` and FLAVA's `MaskedPredictionHead`, as
    the official code does it (positives and negatives in two fusion passes, keys and values per row). Steps of the
    two are interleaved so that machine noise hits both alike. Memory per sample is the size of the tensors autograd
    saves for backward (counted by `torch.autograd.graph.saved_tensors_hooks`, shared storages once), and on CUDA
    also the peak allocated memory.
(b) ITM re-ranking at k texts per image (k = 256, COCO's protocol): pairs/s of the fusion encoder + ITM head with the
    image's cross-attention keys/values computed once (`precompute_cross_attention`) vs the plain per-pair forward.

It also prints the arithmetic FLOPs per sample of the chosen sizes and of ViT-B/16 + BERT-base at 256 px.

    python benchmarks/bench_cosmo_model.py                       # ViT-S/16-ish + 384-wide BERT, 256 px, batch 16
    python benchmarks/bench_cosmo_model.py --width 768 --heads 12 --batch 4   # the base sizes

Install the peer with `pip install --no-deps torchmultimodal-nightly==2024.4.1 iopath` and `pip install portalocker`.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from modeling_cosmo import CosmoConfig, CosmoForPreTraining, select_hard_negatives, smoothed_itc_loss

# ----------------------------------------------------------------------------------------------------------------------
# FLOPs by arithmetic (2 per multiply-add; LayerNorm, softmax, GELU and biases neglected)
# ----------------------------------------------------------------------------------------------------------------------


def flops_per_sample(config: CosmoConfig, text_len: int, mlm_positions: float, cached: bool) -> dict[str, float]:
    """Forward and training-step GFLOPs of one pair of the COSMO/GRIT step (ITC + ITM with 2 negatives + MLM).

    Per transformer layer over T tokens of width D with MLP width F: `T (4 D² + 2 D F) + 2 T² D` multiply-adds
    (q, k, v, o projections; MLP; scores and weighted sum). A fusion layer adds the cross-attention: queries and
    output `2 L D²`, keys and values from the N image tokens `2 N D_img D`, scores and sum `2 L N D`. Training =
    3 x forward (backward = 2 x forward).
    """
    v, t = config.vision_config, config.text_config
    n = (v.image_size // v.patch_size) ** 2 + 1
    d, f, dv, fv, L = t.hidden_size, t.intermediate_size, v.hidden_size, v.intermediate_size, text_len
    patch = (n - 1) * dv * v.num_channels * v.patch_size**2
    vision = patch + v.num_hidden_layers * (n * (4 * dv * dv + 2 * dv * fv) + 2 * n * n * dv)
    text_layer = L * (4 * d * d + 2 * d * f) + 2 * L * L * d
    text = t.fusion_layer * text_layer
    fusion_layers = t.num_hidden_layers - t.fusion_layer
    kv = fusion_layers * 2 * n * dv * d
    fusion_rest = fusion_layers * (text_layer + 2 * L * d * d + 2 * L * n * d)
    mlm_head = mlm_positions * (d * d + d * t.vocab_size)
    fused_passes = 4  # 1 positive + 2 negatives (ITM) + 1 MLM row per pair
    kv_passes = 1 if cached else fused_passes
    projections = config.embed_dim * (d + dv)
    forward = vision + text + projections + fused_passes * fusion_rest + kv_passes * kv + text + mlm_head
    macs = {"vision": vision, "text (ITC)": text, "fusion x4 (ITM 3 + MLM 1)": fused_passes * fusion_rest,
            "cross-attention keys/values": kv_passes * kv, "text (MLM)": text, "MLM head": mlm_head}
    return {"forward_gflops": 2 * forward / 1e9, "train_step_gflops": 6 * forward / 1e9,
            "forward_breakdown_gflops": {k: round(2 * m / 1e9, 3) for k, m in macs.items()}}


def rerank_flops_per_pair(config: CosmoConfig, text_len: int, k: int, cached: bool) -> float:
    """GFLOPs per (image, text) pair of ITM re-ranking (fusion layers + head); cached: keys/values once per k pairs."""
    v, t = config.vision_config, config.text_config
    n = (v.image_size // v.patch_size) ** 2 + 1
    d, f, L = t.hidden_size, t.intermediate_size, text_len
    layers = t.num_hidden_layers - t.fusion_layer
    rest = layers * (L * (4 * d * d + 2 * d * f) + 2 * L * L * d + 2 * L * d * d + 2 * L * n * d) + 2 * d
    kv = layers * 2 * n * v.hidden_size * d
    return 2 * (rest + (kv / k if cached else kv)) / 1e9


# ----------------------------------------------------------------------------------------------------------------------
# The peer step
# ----------------------------------------------------------------------------------------------------------------------


class PeerALBEF(nn.Module):
    """ALBEF from torchmultimodal's modules with the sizes of a COSMO config (no momentum encoder, no queue)."""

    def __init__(self, config: CosmoConfig):
        super().__init__()
        from torchmultimodal.models.albef.image_encoder import ALBEFVisionEncoder
        from torchmultimodal.models.albef.multimodal_encoder import ALBEFMultimodalEncoder
        from torchmultimodal.modules.encoders.bert_text_encoder import bert_text_encoder
        from torchmultimodal.modules.losses.flava import MaskedPredictionHead

        t, v = config.text_config, config.vision_config
        self.vision_encoder = ALBEFVisionEncoder(v.image_size, v.patch_size, v.num_hidden_layers,
                                                 v.num_attention_heads, v.hidden_size, v.intermediate_size)
        self.text_encoder = bert_text_encoder(hidden_size=t.hidden_size, num_hidden_layers=t.fusion_layer,
                                              num_attention_heads=t.num_attention_heads,
                                              intermediate_size=t.intermediate_size, dropout=0.0,
                                              vocab_size=t.vocab_size)
        self.multimodal_encoder = ALBEFMultimodalEncoder(t.hidden_size, t.num_hidden_layers - t.fusion_layer,
                                                         t.num_attention_heads, t.intermediate_size)
        self.vision_proj = nn.Linear(v.hidden_size, config.embed_dim)
        self.text_proj = nn.Linear(t.hidden_size, config.embed_dim)
        self.itm_head = nn.Linear(t.hidden_size, 2)
        self.mlm_head = MaskedPredictionHead(hidden_size=t.hidden_size, vocab_size=t.vocab_size, layer_norm_eps=1e-12)
        self.temp = nn.Parameter(torch.full((1,), 0.07))

    def loss(self, batch: dict) -> torch.Tensor:
        image = self.vision_encoder(batch["pixel_values"])  # (B, N, D)
        text = self.text_encoder(batch["input_ids"], batch["attention_mask"]).last_hidden_state  # (B, L, D)
        image_feat = F.normalize(self.vision_proj(image[:, 0]), dim=-1)
        text_feat = F.normalize(self.text_proj(text[:, 0]), dim=-1)
        sim_i2t = image_feat @ text_feat.t() / self.temp
        itc = smoothed_itc_loss(sim_i2t, sim_i2t.t(), smoothing=0.5)
        neg_image = select_hard_negatives(sim_i2t.t())[:, 0]  # (B,) hardest image of each text
        neg_text = select_hard_negatives(sim_i2t)[:, 0]  # (B,) hardest text of each image
        mask = batch["attention_mask"]
        positive = self.multimodal_encoder(text, mask, image)  # the official code's two fusion passes
        negative = self.multimodal_encoder(torch.cat([text, text[neg_text]]), torch.cat([mask, mask[neg_text]]),
                                           torch.cat([image[neg_image], image]))
        itm_logits = self.itm_head(torch.cat([positive[:, 0], negative[:, 0]]))
        labels = torch.cat([torch.ones(len(text), dtype=torch.long), torch.zeros(2 * len(text), dtype=torch.long)])
        itm = F.cross_entropy(itm_logits, labels.to(itm_logits.device))
        masked = self.text_encoder(batch["mlm_input_ids"], mask).last_hidden_state
        fused = self.multimodal_encoder(masked, mask, image)
        chosen = batch["mlm_labels"] != -100
        mlm = F.cross_entropy(self.mlm_head(fused[chosen]), batch["mlm_labels"][chosen])
        return itc + itm + mlm


# ----------------------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------------------


def make_config(args) -> CosmoConfig:
    layer = {"hidden_size": args.width, "num_attention_heads": args.heads, "intermediate_size": 4 * args.width}
    return CosmoConfig(
        text_config={**layer, "num_hidden_layers": args.text_layers, "fusion_layer": args.text_layers // 2,
                     "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        vision_config={**layer, "num_hidden_layers": args.vision_layers, "image_size": args.image_size,
                       "patch_size": 16},
    )


def make_batch(config: CosmoConfig, batch: int, text_len: int, device: str) -> dict:
    generator = torch.Generator().manual_seed(0)
    vocab = config.text_config.vocab_size
    input_ids = torch.randint(1000, vocab, (batch, text_len), generator=generator)
    input_ids[:, 0] = 101  # [CLS]
    attention_mask = torch.ones(batch, text_len, dtype=torch.long)
    chosen = torch.rand(batch, text_len, generator=generator) < 0.5
    chosen[:, 0] = False
    out = {"input_ids": input_ids, "attention_mask": attention_mask,
           "pixel_values": torch.randn(batch, 3, config.vision_config.image_size, config.vision_config.image_size,
                                       generator=generator),
           "mlm_input_ids": input_ids.masked_fill(chosen, 103), "mlm_labels": input_ids.masked_fill(~chosen, -100)}
    return {k: v.to(device) for k, v in out.items()}


def saved_activation_bytes(loss_fn) -> int:
    """Bytes of the tensors autograd saves during one forward (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn()
    loss.backward()
    return sum(storages.values())


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_training(args, config: CosmoConfig) -> dict:
    torch.manual_seed(0)
    ours = CosmoForPreTraining(copy.deepcopy(config)).to(args.device).train()
    ours_eager = CosmoForPreTraining(copy.deepcopy(config)).to(args.device).train()  # own config: the attention
    ours_eager.set_attn_implementation("eager")  # implementation is a field of the (otherwise shared) config
    assert ours.config.text_config._attn_implementation == "sdpa"
    peer = PeerALBEF(config).to(args.device).train()
    batch = make_batch(config, args.batch, args.text_len, args.device)
    steps = {
        "ours": lambda: ours(**batch).loss,
        "ours_eager": lambda: ours_eager(**batch).loss,
        "torchmultimodal": lambda: peer.loss(batch),
    }
    times = {name: [] for name in steps}
    for repeat in range(args.warmup + args.repeats):
        for name, step in steps.items():
            elapsed = timed(lambda: step().backward(), args.device)
            if repeat >= args.warmup:
                times[name].append(elapsed)
    result = {name: {"step_s": statistics.median(t), "samples_per_s": args.batch / statistics.median(t)}
              for name, t in times.items()}
    for name, step in steps.items():
        result[name]["saved_activations_mb_per_sample"] = saved_activation_bytes(step) / args.batch / 2**20
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step().backward()
            result[name]["cuda_peak_mb_per_sample"] = torch.cuda.max_memory_allocated() / args.batch / 2**20
    peer_rate = result["torchmultimodal"]["samples_per_s"]
    result["speedup_ours_vs_torchmultimodal"] = result["ours"]["samples_per_s"] / peer_rate
    result["speedup_ours_eager_vs_torchmultimodal"] = result["ours_eager"]["samples_per_s"] / peer_rate
    return result


@torch.no_grad()
def bench_rerank(args, config: CosmoConfig) -> dict:
    torch.manual_seed(0)
    model = CosmoForPreTraining(config).to(args.device).eval()
    batch = make_batch(config, 1, args.rerank_text_len, args.device)
    image_states = model.encode_image(batch["pixel_values"])  # (1, 1 + N, D)
    ids = torch.randint(1000, config.text_config.vocab_size, (args.k, args.rerank_text_len)).to(args.device)
    mask = torch.ones_like(ids)
    text_states = model.encode_text(ids, mask)  # (k, L, D), encoded once in both variants

    def cached():
        cache = model.precompute_cross_attention(image_states)
        for chunk in range(0, args.k, args.rerank_batch):
            rows = slice(chunk, chunk + args.rerank_batch)
            model.itm_logits(text_states[rows], mask[rows], cross_attention_cache=cache)

    def plain():  # as ALBEF's evaluation: the image's states repeated for every text, keys/values per pair
        for chunk in range(0, args.k, args.rerank_batch):
            rows = slice(chunk, chunk + args.rerank_batch)
            repeated = image_states.repeat(text_states[rows].shape[0], 1, 1)  # (b, 1 + N, D)
            model.itm_logits(text_states[rows], mask[rows], repeated)

    times = {"cached": [], "plain": []}
    for repeat in range(args.warmup + args.repeats):
        for name, fn in (("cached", cached), ("plain", plain)):
            elapsed = timed(fn, args.device)
            if repeat >= args.warmup:
                times[name].append(elapsed)
    result = {name: {"pairs_per_s": args.k / statistics.median(t)} for name, t in times.items()}
    result["speedup_cached_vs_plain"] = result["cached"]["pairs_per_s"] / result["plain"]["pairs_per_s"]
    result["flops_ratio_plain_vs_cached"] = (rerank_flops_per_pair(config, args.rerank_text_len, args.k, False)
                                             / rerank_flops_per_pair(config, args.rerank_text_len, args.k, True))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=384, help="width of both encoders (768 = ViT-B / BERT-base)")
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vision_layers", type=int, default=12)
    parser.add_argument("--text_layers", type=int, default=12, help="split half text, half fusion")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--text_len", type=int, default=25, help="pre-training captions: 25 tokens")
    parser.add_argument("--k", type=int, default=256, help="texts re-ranked per image")
    parser.add_argument("--rerank_text_len", type=int, default=16)
    parser.add_argument("--rerank_batch", type=int, default=64, help="texts per fusion batch in re-ranking")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip", choices=["training", "rerank"], default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    config = make_config(args)
    base = CosmoConfig.from_preset("cosmo_vitb16_bert_base_256px")
    mlm_positions = 0.5 * (args.text_len - 2)
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "device": args.device,
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "sizes": {k: getattr(args, k) for k in ("width", "heads", "vision_layers", "text_layers", "image_size", "batch",
                                                "text_len", "k", "rerank_text_len", "rerank_batch")},
        "flops_per_sample": {
            "these_sizes_cached": flops_per_sample(config, args.text_len, mlm_positions, cached=True),
            # The official step projects every position onto the vocabulary; ours only the masked ones (p = 0.5).
            "vitb16_bert_base_256px_official_step": flops_per_sample(base, 25, 25, cached=False),
            "vitb16_bert_base_256px_cached": flops_per_sample(base, 25, 11.5, cached=True),
        },
        "rerank_flops_per_pair_vitb16_bert_base": {
            f"L={L}": {"plain_gflops": rerank_flops_per_pair(base, L, 256, False),
                       "cached_gflops": rerank_flops_per_pair(base, L, 256, True),
                       "ratio": rerank_flops_per_pair(base, L, 256, False) / rerank_flops_per_pair(base, L, 256, True)}
            for L in (12, 16, 25, 30)
        },
    }
    if args.skip != "training":
        result["training_step"] = bench_training(args, config)
        print(json.dumps({"training_step": result["training_step"]}), flush=True)
    if args.skip != "rerank":
        result["itm_rerank"] = bench_rerank(args, config)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
