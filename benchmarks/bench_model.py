"""Training-step throughput of DiHTModel vs open_clip on the same architecture, batch and weights, in one process.

One step = forward of both towers + contrastive loss + backward. Ours runs `DiHTModel(..., return_loss=True)`
(HN-NCE with the config's α, β; `--beta 0` makes it CLIP's InfoNCE); open_clip runs `encode_image`/`encode_text`
and its own `ClipLoss`. Both start from the same random open_clip weights (converted with our converter), and the
steps of the two models are interleaved so that machine noise hits both alike.

    python benchmarks/bench_model.py --model ViT-B-32 --batch 32 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import open_clip
import torch

from modeling_diht import DiHTConfig, DiHTModel
from modeling_diht.convert_diht_original_to_hf import convert_state_dict

PRESETS = {"ViT-B-32": "diht_vitb32_224px", "ViT-B-16": "diht_vitb16_224px", "ViT-L-14": "diht_vitl14_224px"}


def build_pair(name: str, beta: float, device: str, attn: str) -> tuple[DiHTModel, torch.nn.Module]:
    reference = open_clip.create_model(name, pretrained=None, device=device)
    config = DiHTConfig.from_preset(PRESETS[name], hn_nce_alpha=1.0, hn_nce_beta=beta)
    ours = DiHTModel(config)
    ours.load_state_dict(convert_state_dict(reference.state_dict(), config))
    ours.set_attn_implementation(attn)
    return ours.to(device).train(), reference.train()


def timed(step, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--beta", type=float, default=0.5, help="HN-NCE β of our step (0 = InfoNCE)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    ours, theirs = build_pair(args.model, args.beta, args.device, args.attn)
    image_size = ours.config.vision_config.image_size
    pixels = torch.randn(args.batch, 3, image_size, image_size, device=args.device)
    tokens = open_clip.get_tokenizer(args.model)([f"a photo of object number {i}" for i in range(args.batch)])
    tokens = tokens.to(args.device)
    clip_loss = open_clip.ClipLoss()

    def our_step():
        ours.zero_grad(set_to_none=True)
        ours(input_ids=tokens, pixel_values=pixels, return_loss=True).loss.backward()

    def their_step():
        theirs.zero_grad(set_to_none=True)
        image = theirs.encode_image(pixels, normalize=True)
        text = theirs.encode_text(tokens, normalize=True)
        clip_loss(image, text, theirs.logit_scale.exp()).backward()

    for _ in range(args.warmup):
        our_step(), their_step()
    ours_s, theirs_s = [], []
    for _ in range(args.repeats):  # interleaved
        ours_s.append(timed(our_step, args.device))
        theirs_s.append(timed(their_step, args.device))

    ours_med, theirs_med = statistics.median(ours_s), statistics.median(theirs_s)
    result = {
        "model": args.model, "batch": args.batch, "device": args.device, "attn": args.attn, "beta": args.beta,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "open_clip": open_clip.__version__,
        "machine": platform.processor() or platform.machine(),
        "ours_samples_per_s": args.batch / ours_med, "open_clip_samples_per_s": args.batch / theirs_med,
        "throughput_ratio_ours_over_open_clip": theirs_med / ours_med,
    }
    print(f"{args.model} batch {args.batch} on {args.device}: DiHTModel {result['ours_samples_per_s']:.2f} samples/s, "
          f"open_clip {result['open_clip_samples_per_s']:.2f} samples/s, ratio {result['throughput_ratio_ours_over_open_clip']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
