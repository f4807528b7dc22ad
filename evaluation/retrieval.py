"""Image↔text retrieval with several captions per image, computed in chunks, with optional re-ranking.

DiHT (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280, zero-shot evaluation) reports recall@1/5/10 in both directions
on COCO 5k and Flickr30k 1k, every caption optionally wrapped as "a photo of {}.". ALBEF-style models (ALBEF, arXiv
2107.07651; COSMO, arXiv 2312.06112) rank by the contrastive similarity, then re-rank the top k by the
image-text matching score (k = 256 on COCO, 128 on Flickr): `evaluate_retrieval(..., rescorer=..., rerank_k=k)`
reports both the similarity-only and the re-ranked recalls.

The similarity matrix is never held whole: each direction takes the top-k of query chunks against the gallery, so
a gallery of 100k images and 500k captions needs memory for one chunk of rows (2^25 similarities, 128 MB), the
embeddings and the `(N, k)` rankings, not for the N_img × N_txt matrix.

Under `torch.distributed` each process encodes its shard of the images and of the texts (row `i` on process
`i mod world_size`, `encoding.encode_image_shards` / `encode_text_shards`) and ranks its shard of the queries of
both directions against the whole gathered gallery; the rankings are gathered, so every process computes the same
recalls. Re-ranking runs on every process over every query, as in one process (a re-scorer's forwards stay the same
on all processes, which a ZeRO-3 model needs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .classification import check_columns
from .encoding import LazyImages, encode_image_shards, encode_text_shards
from .metrics import load_metric
from .records import EvaluationRecord
from .sharding import gather_strided, process_shard

__all__ = ["PairRescorer", "captions_per_image", "evaluate_retrieval", "rank_gallery", "recall_metrics",
           "rerank", "retrieval_metrics"]

# A re-scorer of (image, text) pairs: `rescorer(images, texts, pairs)` with `pairs` a `(P, 2)` LongTensor of
# (image position, text position) returns `(P,)` scores (higher = better match), e.g. COSMO's ITM match
# probability (`evaluation.itm_rerank.ITMRescorer`).
PairRescorer = Callable[[Sequence[Any], Sequence[str], torch.Tensor], torch.Tensor]

_CHUNK_ELEMENTS = 1 << 25  # similarity entries per chunk (128 MB of float32)


def rank_gallery(queries: torch.Tensor, gallery: torch.Tensor, k: int,
                 chunk_size: int | None = None) -> torch.Tensor:
    """The `k` most similar gallery rows of every query, by dot product, best first, in query chunks.

    Args:
        queries: `(Q, P)` unit rows.
        gallery: `(G, P)` unit rows.
        k: candidates per query (capped at G).
        chunk_size: queries per chunk (default: as many as fit 2^25 similarities).

    Returns:
        `(Q, min(k, G))` gallery indices.
    """
    k = min(k, gallery.shape[0])
    chunk_size = chunk_size or max(1, _CHUNK_ELEMENTS // max(1, gallery.shape[0]))
    return torch.cat([(queries[start:start + chunk_size] @ gallery.t()).topk(k, dim=1).indices
                      for start in range(0, queries.shape[0], chunk_size)])


def _rank_query_shards(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> torch.Tensor:
    """`rank_gallery` of every query, each process ranking the queries `rank::world_size` (gathered back)."""
    rank, world_size = process_shard()
    if world_size == 1:
        return rank_gallery(queries, gallery, k)
    mine = queries[rank::world_size]  # (⌈Q / W⌉ or fewer, P)
    ranked = (rank_gallery(mine, gallery, k) if len(mine) else
              torch.empty((0, min(k, gallery.shape[0])), dtype=torch.long, device=queries.device))
    return gather_strided(ranked, queries.shape[0])


def captions_per_image(text_to_image: Sequence[int], num_images: int) -> list[list[int]]:
    """The inverse of `text_to_image`: for every image, the indices of its texts."""
    captions_of: list[list[int]] = [[] for _ in range(num_images)]
    for text, image in enumerate(text_to_image):
        captions_of[image].append(text)
    return captions_of


def recall_metrics(image_to_text: torch.Tensor, text_to_image_ranked: torch.Tensor, text_to_image: Sequence[int],
                   ks: Sequence[int] = (1, 5, 10), prefix: str = "") -> dict[str, float]:
    """Recall@k in both directions from ranked candidate lists, through the `retrieval_recall` metric module.

    Image→text: an image is a hit at k when any of its captions is among its first k texts. Text→image: a caption
    is a hit at k when its own image is among its first k images.

    Args:
        image_to_text: `(N_img, K)` ranked text indices per image.
        text_to_image_ranked: `(N_txt, K)` ranked image indices per text.
        text_to_image: for every text, the row of its image.
        ks: the k of each reported recall (at most K).
        prefix: prepended to every metric name (e.g. `"reranked_"`).

    Returns:
        `{"<prefix>image_to_text_recall@1": ..., ..., "<prefix>text_to_image_recall@10": ...}` as fractions.
    """
    captions_of = captions_per_image(text_to_image, image_to_text.shape[0])
    metric = load_metric("retrieval_recall")
    results = {}
    for direction, predictions, references in (
        ("image_to_text", image_to_text, captions_of),
        ("text_to_image", text_to_image_ranked, [[image] for image in text_to_image]),
    ):
        recalls = metric.compute(predictions=predictions.cpu().tolist(), references=references, k=list(ks))
        results.update({f"{prefix}{direction}_{name}": value for name, value in recalls.items()})
    return results


def retrieval_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_to_image: Sequence[int],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k in both directions by embedding similarity (see `recall_metrics`).

    Args:
        image_embeds: `(N_img, P)` unit rows.
        text_embeds: `(N_txt, P)` unit rows.
        text_to_image: for every text, the row of its image in `image_embeds`.
        ks: the k of each reported recall.

    Returns:
        `{"image_to_text_recall@1": ..., ..., "text_to_image_recall@10": ...}` as fractions.
    """
    k = max(ks)
    return recall_metrics(rank_gallery(image_embeds, text_embeds, k), rank_gallery(text_embeds, image_embeds, k),
                          text_to_image, ks)


def rerank(image_to_text: torch.Tensor, text_to_image: torch.Tensor, rescorer: PairRescorer,
           images: Sequence[Any], texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-order every query's candidates by a pair re-scorer (ALBEF's ITC → ITM retrieval protocol, arXiv 2107.07651).

    The pairs of both directions are scored in one call, each distinct (image, text) pair once; candidates with
    equal scores keep their similarity order.

    Args:
        image_to_text: `(N_img, k)` candidate texts per image, by similarity.
        text_to_image: `(N_txt, k)` candidate images per text, by similarity.
        rescorer: see `PairRescorer`.
        images, texts: what the positions of the pairs refer to (images may decode lazily).

    Returns:
        The two candidate tensors, each row re-ordered by descending score.
    """
    num_images, k_i = image_to_text.shape
    num_texts, k_t = text_to_image.shape
    forward = torch.stack([torch.arange(num_images).repeat_interleave(k_i), image_to_text.reshape(-1).cpu()], 1)
    backward = torch.stack([text_to_image.reshape(-1).cpu(), torch.arange(num_texts).repeat_interleave(k_t)], 1)
    pairs, inverse = torch.unique(torch.cat([forward, backward]), dim=0, return_inverse=True)  # (P, 2) each once
    scores = rescorer(images, texts, pairs).float().cpu()[inverse]  # (N_img·k_i + N_txt·k_t,)
    order_i = scores[: num_images * k_i].view(num_images, k_i).argsort(dim=1, descending=True, stable=True)
    order_t = scores[num_images * k_i:].view(num_texts, k_t).argsort(dim=1, descending=True, stable=True)
    return image_to_text.cpu().gather(1, order_i), text_to_image.cpu().gather(1, order_t)


def _captions(cell: Any, column: str) -> list[str]:
    captions = [cell] if isinstance(cell, str) else list(cell or [])
    if not captions or not all(isinstance(c, str) and c.strip() for c in captions):
        raise ValueError(f"every row needs at least one non-empty caption in {column!r}; got {cell!r}")
    return captions


def evaluate_retrieval(model, tokenizer, image_processor, dataset, *, image_column: str = "image",
                       caption_column: str = "caption", caption_template: str | None = None,
                       ks: Sequence[int] = (1, 5, 10), batch_size: int = 64, num_workers: int = 0,
                       rescorer: PairRescorer | None = None, rerank_k: int = 256,
                       return_embeddings: bool = False) -> EvaluationRecord:
    """Zero-shot image↔text retrieval with one or several captions per image (DiHT, arXiv 2301.02280).

    Args:
        model, tokenizer, image_processor: a dual encoder's parts (DiHT, CLIP, COSMO).
        dataset: one row per image; `caption_column` holds a caption or a list of captions (COCO: 5, Flickr30k: 5).
        caption_template: wrap every caption, e.g. `"a photo of {}."` (`templates.DIHT_CAPTION_TEMPLATE`, the DiHT
            protocol); `None` keeps the captions as they are.
        ks: recall@k to report.
        batch_size, num_workers: of the image DataLoader.
        rescorer: re-rank each query's top `rerank_k` candidates with this pair scorer (`PairRescorer`) and also
            report `reranked_*` recalls; needs a map-style dataset (images are decoded again, lazily).
        rerank_k: candidates re-ranked per query (ALBEF/COSMO: 256 on COCO, 128 on Flickr30k).
        return_embeddings: also keep, in `record.embeddings`, `image_embeds`, `text_embeds`, `texts`,
            `text_to_image` and the kept rows' `index`.

    Returns:
        An `EvaluationRecord` with `metrics` `image_to_text_recall@k` and `text_to_image_recall@k` (and
        `reranked_...` with a re-scorer), `num_images`, `num_texts`, `skipped_images`; under `torch.distributed`
        every process encodes only its shards of the images and texts and returns the record of the whole dataset.
    """
    check_columns(dataset, image_column, caption_column)
    if caption_template is not None and caption_template.count("{}") != 1:
        raise ValueError(f"caption_template needs exactly one '{{}}'; got {caption_template!r}")
    if rescorer is not None and not hasattr(dataset, "__getitem__"):
        raise ValueError("re-ranking decodes the candidate images again: it needs a map-style dataset, not a stream")
    model.eval()
    image_embeds, extras = encode_image_shards(  # (N_img, P); captions of skipped images are dropped too
        model, dataset, image_processor, image_column=image_column, keep_columns=[caption_column],
        batch_size=batch_size, num_workers=num_workers)
    texts, text_to_image = [], []
    for image, cell in enumerate(extras[caption_column]):
        for caption in _captions(cell, caption_column):
            texts.append(caption_template.format(caption) if caption_template else caption)
            text_to_image.append(image)
    text_embeds = encode_text_shards(model, tokenizer, texts)  # (N_txt, P)
    depth = max(max(ks), rerank_k if rescorer is not None else 0)
    image_to_text = _rank_query_shards(image_embeds, text_embeds, depth)  # (N_img, depth)
    text_to_image_ranked = _rank_query_shards(text_embeds, image_embeds, depth)  # (N_txt, depth)
    metrics = recall_metrics(image_to_text, text_to_image_ranked, text_to_image, ks)
    protocol: dict[str, Any] = {"caption_template": caption_template}
    if rescorer is not None:
        images = LazyImages(dataset, image_column, extras["index"])
        reranked = rerank(image_to_text[:, :rerank_k], text_to_image_ranked[:, :rerank_k], rescorer, images, texts)
        metrics.update(recall_metrics(*reranked, text_to_image, [k for k in ks if k <= rerank_k], prefix="reranked_"))
        protocol.update(rerank_k=rerank_k, rescorer=type(rescorer).__name__)
    record = EvaluationRecord(task="retrieval", metrics=metrics, protocol=protocol, num_images=len(image_embeds),
                              num_texts=len(texts), skipped_images=extras["skipped"])
    if return_embeddings:
        record.embeddings = {"image_embeds": image_embeds, "text_embeds": text_embeds, "texts": texts,
                             "text_to_image": text_to_image, "index": extras["index"]}
    return record
