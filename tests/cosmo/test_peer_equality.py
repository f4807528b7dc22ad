"""COSMO's encoders, fusion, ITM and MLM equal torchmultimodal's ALBEF modules with the same weights.

torchmultimodal (facebookresearch/multimodal, BSD) is an independent ALBEF implementation (torchvision's ViT, its own
BERT layers and cross-attention layers). Install: `pip install --no-deps torchmultimodal-nightly==2024.4.1 iopath`
plus `pip install portalocker` (iopath's import-time dependency). Tolerance: float32, atol = rtol = 1e-5.
"""

import pytest
import torch

try:
    import torchmultimodal  # noqa: F401
except ImportError as error:  # a missing peer is an error, not a skip
    raise ImportError("the COSMO peer tests need torchmultimodal: pip install --no-deps "
                      "torchmultimodal-nightly==2024.4.1 iopath && pip install portalocker") from error

from modeling_cosmo import CosmoForPreTraining
from tests.cosmo.helpers import TorchMultimodalALBEF, peer_state_dict, random_batch, random_mlm, tiny_config

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    config = tiny_config()
    ours = CosmoForPreTraining(config).eval()
    with torch.no_grad():  # move every weight off its initial value (LayerNorms included) so nothing matches by luck
        for parameter in ours.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    peer = TorchMultimodalALBEF(config).eval()
    missing, unexpected = peer.load_state_dict(peer_state_dict(ours.state_dict(), config), strict=True)
    assert not missing and not unexpected
    return ours, peer


@pytest.fixture(scope="module")
def batch():
    return random_batch(batch_size=4, seq_len=8)


def test_image_states_and_embeddings_equal_the_peer(pair, batch):
    ours, peer = pair
    with torch.no_grad():
        theirs = peer.image_states(batch["pixel_values"])
        torch.testing.assert_close(ours.encode_image(batch["pixel_values"]), theirs, **TOL)
        expected = torch.nn.functional.normalize(peer.vision_proj(theirs[:, 0]), dim=-1)
        torch.testing.assert_close(ours.get_image_features(batch["pixel_values"]).pooler_output, expected, **TOL)


def test_text_states_and_embeddings_equal_the_peer(pair, batch):
    ours, peer = pair
    with torch.no_grad():
        theirs = peer.text_states(batch["input_ids"], batch["attention_mask"])
        mine = ours.encode_text(batch["input_ids"], batch["attention_mask"])
        real = batch["attention_mask"].bool()  # padded positions are unconstrained in both
        torch.testing.assert_close(mine[real], theirs[real], **TOL)
        expected = torch.nn.functional.normalize(peer.text_proj(theirs[:, 0]), dim=-1)
        torch.testing.assert_close(ours.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output,
                                   expected, **TOL)


@pytest.mark.parametrize("cached", [False, True])
def test_fusion_states_and_itm_logits_equal_the_peer(pair, batch, cached):
    ours, peer = pair
    with torch.no_grad():
        image_states = peer.image_states(batch["pixel_values"])
        text_states = peer.text_states(batch["input_ids"], batch["attention_mask"])
        theirs = peer.fused(text_states, batch["attention_mask"], image_states)
        if cached:
            cache = ours.precompute_cross_attention(image_states)
            mine = ours.fuse(text_states, batch["attention_mask"], cross_attention_cache=cache)
            itm = ours.itm_logits(text_states, batch["attention_mask"], cross_attention_cache=cache)
        else:
            mine = ours.fuse(text_states, batch["attention_mask"], image_states)
            itm = ours.itm_logits(text_states, batch["attention_mask"], image_states)
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(mine[real], theirs[real], **TOL)
        torch.testing.assert_close(itm, peer.itm_head(theirs[:, 0]), **TOL)


def test_mlm_logits_through_all_layers_with_the_image_equal_the_peer(pair, batch):
    ours, peer = pair
    mlm = random_mlm(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        image_states = peer.image_states(batch["pixel_values"])
        text_states = peer.text_states(mlm["mlm_input_ids"], batch["attention_mask"])
        theirs = peer.mlm_head(peer.fused(text_states, batch["attention_mask"], image_states))
        mine = ours.mlm_logits(mlm["mlm_input_ids"], batch["attention_mask"], image_states)
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(mine[real], theirs[real], **TOL)
