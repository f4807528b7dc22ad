"""`CosmoForPreTraining(return_loss=True)`: the local loss itc + itm + mlm against a reference computed here.

The reference runs torchmultimodal's ALBEF modules (same weights) and writes every step out: S-ITC per row with
multi-positive targets from image ids and ε = 0.5, hard negatives by explicit loops over the similarities, one ITM
cross-entropy over the positive, negative and extra rows, MLM at the masked positions.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_cosmo import CosmoForPreTraining
from tests.cosmo.helpers import TorchMultimodalALBEF, peer_state_dict, random_batch, random_mlm, tiny_config


def _approx(value: float):
    return pytest.approx(value, rel=1e-5, abs=1e-5)


def _soft_ce_rows(logits: torch.Tensor, targets: list[list[float]]) -> float:
    total = 0.0
    for row, target in zip(logits.tolist(), targets):
        log_z = math.log(sum(math.exp(v) for v in row))
        total += -sum(t * (v - log_z) for t, v in zip(target, row))
    return total / len(targets)


def test_local_loss_is_itc_plus_itm_plus_mlm_of_the_reference():
    torch.manual_seed(0)
    config = tiny_config(itc_smoothing=0.5, hard_negative_mode="argmax")
    model = CosmoForPreTraining(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        model.temp.fill_(0.05)
    peer = TorchMultimodalALBEF(config).eval()
    peer.load_state_dict(peer_state_dict(model.state_dict(), config))

    batch = random_batch(batch_size=5, seq_len=8, seed=3)
    mlm = random_mlm(batch["input_ids"], batch["attention_mask"], seed=4)
    image_id = torch.tensor([5, 5, 6, 7, 8])  # pairs 0 and 1 show the same image
    extra = torch.tensor([[0, 3]])  # a converted pair: image 0 with text 3, label 1
    out = model(**batch, **mlm, image_id=image_id, extra_itm_pairs=extra)

    with torch.no_grad():
        images = peer.image_states(batch["pixel_values"])
        texts = peer.text_states(batch["input_ids"], batch["attention_mask"])
        image_embeds = F.normalize(peer.vision_proj(images[:, 0]), dim=-1)
        text_embeds = F.normalize(peer.text_proj(texts[:, 0]), dim=-1)
        sim_i2t = image_embeds @ text_embeds.t() / 0.05
        sim_t2i = sim_i2t.t()
        B, ids = 5, image_id.tolist()

        # ITC: positives share an image id; S-ITC targets (1 - ε) y + ε / B.
        targets = []
        for i in range(B):
            positives = [float(ids[i] == ids[j]) for j in range(B)]
            targets.append([0.5 * p / sum(positives) + 0.5 / B for p in positives])
        itc = (_soft_ce_rows(sim_i2t, targets) + _soft_ce_rows(sim_t2i, targets)) / 2

        # ITM: for every text the most similar image of another image id, for every image the hardest text.
        def hardest(sim: torch.Tensor, anchor: int) -> int:
            candidates = [j for j in range(B) if ids[j] != ids[anchor]]
            return max(candidates, key=lambda j: sim[anchor, j].item())

        rows = [(i, i, 1) for i in range(B)]
        rows += [(hardest(sim_t2i, t), t, 0) for t in range(B)]
        rows += [(i, hardest(sim_i2t, i), 0) for i in range(B)]
        rows += [(0, 3, 1)]
        image_rows = torch.tensor([r[0] for r in rows])
        text_rows = torch.tensor([r[1] for r in rows])
        fused = peer.fused(texts[text_rows], batch["attention_mask"][text_rows], images[image_rows])
        itm = F.cross_entropy(peer.itm_head(fused[:, 0]), torch.tensor([r[2] for r in rows])).item()

        # MLM: all 2 + 2 layers with the image, loss at the masked positions (token mean).
        masked_texts = peer.text_states(mlm["mlm_input_ids"], batch["attention_mask"])
        logits = peer.mlm_head(peer.fused(masked_texts, batch["attention_mask"], images))
        chosen = mlm["mlm_labels"] != -100
        mlm_value = F.cross_entropy(logits[chosen], mlm["mlm_labels"][chosen]).item()

    assert out.itc_loss.item() == _approx(itc)
    assert out.itm_loss.item() == _approx(itm)
    assert out.mlm_loss.item() == _approx(mlm_value)
    assert out.loss.item() == _approx(itc + itm + mlm_value)
    assert out.itm_labels.tolist() == [r[2] for r in rows]
    assert sorted(map(tuple, out.itm_pairs.tolist())) == sorted((r[0], r[1]) for r in rows)

