"""Speed and memory of HN-NCE (dense and tiled) against CLIP's InfoNCE.

Variants, each timed as forward + backward from the embeddings (the logit matmul included):
  infonce  CLIP's loss, (cross_entropy(S, arange) + cross_entropy(S.T, arange)) / 2 with S = scale * I @ T.T
  dense    hn_nce_loss(alpha=1, beta=0.5), the B x B logits in one block
  chunked  hn_nce_loss(alpha=1, beta=0.5, chunk_size=C), tiled, O(B * C) memory
  autograd the same loss through plain autograd (hn_nce_per_row on S and S.T), speed mode only

Modes:
  speed   median time of each variant at each --batch, ratios HN-NCE / InfoNCE and chunked / dense
  memory  peak memory each variant adds on top of its inputs (CUDA: max_memory_allocated; CPU: peak RSS of a fresh
          subprocess per variant, minus its RSS once the inputs exist)
  fit     memory measured at --fit_batch sizes, a quadratic (dense) / linear (chunked) fit, and the largest B that
          the fit puts under --budget_gb: an extrapolation from the measured points, optionally checked (--verify_gb)
  distributed  one data-parallel process's share of the global-batch loss at --world sizes, from its b = B / world
          pairs and the gathered B (the collectives, 3B numbers, not timed): `hn_nce_local_loss` (its block of the
          logits once, fused backward; chunked with --chunk) against the generic path it replaces (both directions'
          (b, B) rows through `hn_nce_per_row` in autograd), and world x its time against the dense fused
          single-process kernel on B (the same logits, once each)

Examples:
  python benchmarks/bench_hn_nce.py --mode speed                  # B = 4096 and 16384, D = 512
  python benchmarks/bench_hn_nce.py --mode memory --batch 16384
  python benchmarks/bench_hn_nce.py --mode fit --budget_gb 16 --verify_gb 10
  python benchmarks/bench_hn_nce.py --mode distributed --batch 4096 --world 2 8
The last line of output is a JSON object with every figure.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from modeling_diht.loss_diht import hn_nce_local_loss, hn_nce_loss, hn_nce_per_row

ALPHA, BETA = 1.0, 0.5  # the third-party defaults of HN-NCE
LOGIT_SCALE = 100.0  # CLIP's clamp value: the hardest case for stability


def make_inputs(batch: int, dim: int, device: str):
    generator = torch.Generator(device="cpu").manual_seed(0)
    images = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1).to(device).requires_grad_()
    texts = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1).to(device).requires_grad_()
    scale = torch.tensor(LOGIT_SCALE, device=device, requires_grad=True)
    return images, texts, scale


def infonce(images, texts, scale, chunk):
    logits = (images * scale) @ texts.T  # (B, B)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def dense(images, texts, scale, chunk):
    return hn_nce_loss(images, texts, scale, ALPHA, BETA)


def chunked(images, texts, scale, chunk):
    return hn_nce_loss(images, texts, scale, ALPHA, BETA, chunk_size=chunk)


def autograd(images, texts, scale, chunk):
    """The same loss through plain autograd (`hn_nce_per_row` on S and S.T), for comparison."""
    logits = (images * scale) @ texts.T  # (B, B)
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (hn_nce_per_row(logits, target, ALPHA, BETA).mean() + hn_nce_per_row(logits.T, target, ALPHA, BETA).mean())


VARIANTS = {"infonce": infonce, "dense": dense, "chunked": chunked, "autograd": autograd}


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def backward_once(function, inputs, *extra):
    function(*inputs, *extra).backward()
    for x in inputs:
        x.grad = None


def step(variant, inputs, chunk):
    backward_once(VARIANTS[variant], inputs, chunk)


def time_variant(variant, inputs, chunk, repeats, device) -> float:
    return time_call(VARIANTS[variant], inputs, repeats, device, chunk)


def run_speed(args) -> dict:
    results = {}
    for batch in args.batch:
        inputs = make_inputs(batch, args.dim, args.device)
        row = {}
        for variant in ("infonce", "dense", "autograd"):
            row[variant] = time_variant(variant, inputs, None, args.repeats, args.device)
            print(f"B={batch:6d} {variant:8s}           {row[variant] * 1e3:10.1f} ms", flush=True)
        for chunk in args.chunk:
            row[f"chunked_{chunk}"] = time_variant("chunked", inputs, chunk, args.repeats, args.device)
            print(f"B={batch:6d} chunked  (chunk {chunk:5d}) {row[f'chunked_{chunk}'] * 1e3:10.1f} ms", flush=True)
        best_chunk = min(args.chunk, key=lambda c: row[f"chunked_{c}"])
        row["hn_nce_over_infonce"] = row["dense"] / row["infonce"]
        row["best_chunk"] = best_chunk
        row["chunked_over_dense"] = row[f"chunked_{best_chunk}"] / row["dense"]
        print(
            f"B={batch:6d} HN-NCE / InfoNCE = {row['hn_nce_over_infonce']:.2f}x, "
            f"chunked (chunk {best_chunk}) / dense = {row['chunked_over_dense']:.2f}x",
            flush=True,
        )
        results[str(batch)] = row
        del inputs
    return results


def local_fused(images, texts, scale, rows, chunk):
    """This process's share (its first `rows` pairs, offset 0) with the fused block kernel."""
    return hn_nce_local_loss(images[:rows], images.detach(), texts, scale, 0, ALPHA, BETA, chunk_size=chunk)


def local_autograd(images, texts, scale, rows, chunk):
    """The generic path: this process's image->text and text->image rows over all B candidates, plain autograd."""
    target = torch.arange(rows, device=images.device)
    image_to_text = (images[:rows] * scale) @ texts.T  # (b, B)
    text_to_image = (texts[:rows] * scale) @ images.T  # (b, B)
    return 0.5 * (hn_nce_per_row(image_to_text, target, ALPHA, BETA).sum()
                  + hn_nce_per_row(text_to_image, target, ALPHA, BETA).sum()) / len(images)


def time_call(function, inputs, repeats, device, *extra) -> float:
    backward_once(function, inputs, *extra)  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        backward_once(function, inputs, *extra)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_distributed(args) -> dict:
    results = {}
    for batch in args.batch:
        inputs = make_inputs(batch, args.dim, args.device)
        dense_time = time_variant("dense", inputs, None, args.repeats, args.device)
        row = {"dense_single_process": dense_time}
        print(f"B={batch:6d} dense fused, one process {dense_time * 1e3:10.1f} ms", flush=True)
        for world in args.world:
            rows = batch // world
            fused = time_call(local_fused, inputs, args.repeats, args.device, rows, None)
            plain = time_call(local_autograd, inputs, args.repeats, args.device, rows, None)
            chunked = {chunk: time_call(local_fused, inputs, args.repeats, args.device, rows, chunk)
                       for chunk in args.chunk}
            best = min(chunked, key=chunked.get)
            row[str(world)] = {
                "rows_per_process": rows, "fused": fused, "autograd": plain, f"fused_chunk_{best}": chunked[best],
                "autograd_over_fused": plain / fused,
                "world_x_fused_over_dense": world * fused / dense_time,
                "world_x_fused_chunked_over_dense": world * chunked[best] / dense_time,
            }
            print(f"B={batch:6d} world {world:3d} (b={rows}): fused {fused * 1e3:8.1f} ms, chunk {best} "
                  f"{chunked[best] * 1e3:8.1f} ms, autograd {plain * 1e3:8.1f} ms; autograd / fused "
                  f"{plain / fused:.2f}x; world x fused / dense {world * fused / dense_time:.2f}x "
                  f"(chunked {world * chunked[best] / dense_time:.2f}x)", flush=True)
        results[str(batch)] = row
        del inputs
    return results


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_added_memory_here(variant: str, batch: int, dim: int, chunk: int, device: str) -> int:
    """Peak bytes one forward + backward adds on top of its inputs, in this process."""
    step(variant, make_inputs(64, dim, device), min(chunk, 64))  # load kernels and thread pools first
    inputs = make_inputs(batch, dim, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(variant, inputs, chunk)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = rss_bytes()  # the warm-up keeps the peak so far within a few MiB of this
    step(variant, inputs, chunk)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss is in KiB on Linux


def measure_added_memory(variant: str, batch: int, dim: int, chunk: int, device: str, threads: int) -> int:
    if device.startswith("cuda"):
        return measure_added_memory_here(variant, batch, dim, chunk, device)
    # Peak RSS never goes down, so every CPU measurement gets a fresh process.
    command = [sys.executable, os.path.abspath(__file__), "--_child", variant, "--batch", str(batch), "--dim",
               str(dim), "--chunk", str(chunk), "--device", device, "--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return int(output.strip().splitlines()[-1])


def run_memory(args) -> dict:
    results = {}
    chunk = args.chunk[0]
    for batch in args.batch:
        row = {}
        for variant in VARIANTS:
            row[f"{variant}_bytes"] = measure_added_memory(variant, batch, args.dim, chunk, args.device, args.threads)
            print(f"B={batch:6d} {variant:8s} adds {row[f'{variant}_bytes'] / 2**20:10.1f} MiB", flush=True)
        row["chunk"] = chunk
        row["chunked_over_dense"] = row["chunked_bytes"] / row["dense_bytes"]
        print(f"B={batch:6d} chunked (chunk {chunk}) adds {100 * row['chunked_over_dense']:.2f}% of dense", flush=True)
        results[str(batch)] = row
    return results


def fit(batches, values, degree):
    """Least-squares polynomial memory(B) of the given degree; returns coefficients, highest power first."""
    design = torch.tensor([[float(b) ** p for p in range(degree, -1, -1)] for b in batches], dtype=torch.float64)
    target = torch.tensor(values, dtype=torch.float64)[:, None]
    return torch.linalg.lstsq(design, target).solution.squeeze(1).tolist()


def largest_batch(coefficients, budget_bytes) -> int:
    """Largest B whose fitted memory stays within the budget (bisection on the increasing fit)."""
    def predict(b):
        return sum(c * b ** p for c, p in zip(coefficients, range(len(coefficients) - 1, -1, -1)))

    low, high = 2, 2
    while predict(high) <= budget_bytes and high < 2**40:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if predict(middle) <= budget_bytes else (low, middle)
    return low


def run_fit(args) -> dict:
    chunk = args.chunk[0]
    budget = args.budget_gb * 2**30
    results = {"budget_gb": args.budget_gb, "chunk": chunk, "measured": {}}
    for variant, degree in (("dense", 2), ("chunked", 1)):
        batches = args.fit_batch if variant == "dense" else [b for b in args.fit_batch if b >= chunk] or args.fit_batch
        measured = [measure_added_memory(variant, b, args.dim, chunk, args.device, args.threads) for b in batches]
        for b, m in zip(batches, measured):
            print(f"measured {variant:8s} B={b:6d}: {m / 2**20:10.1f} MiB", flush=True)
        coefficients = fit(batches, measured, degree)
        limit = largest_batch(coefficients, budget)
        results["measured"][variant] = dict(zip(map(str, batches), measured))
        results[f"{variant}_fit_coefficients"] = coefficients
        results[f"{variant}_max_batch_extrapolated"] = limit
        model = " + ".join(f"{c:.4g} B^{p}" for c, p in zip(coefficients, range(degree, -1, -1)))
        print(f"{variant}: added bytes ~ {model}", flush=True)
        print(f"{variant}: largest B within {args.budget_gb} GB (EXTRAPOLATED from the fit) = {limit}", flush=True)
    if args.verify_gb:
        coefficients = results["dense_fit_coefficients"]
        batch = largest_batch(coefficients, args.verify_gb * 2**30)
        predicted = sum(c * batch**p for c, p in zip(coefficients, (2, 1, 0)))
        start = time.perf_counter()
        measured = measure_added_memory("dense", batch, args.dim, chunk, args.device, args.threads)
        results["verify"] = {"budget_gb": args.verify_gb, "batch": batch, "predicted_bytes": predicted,
                             "measured_bytes": measured, "seconds": time.perf_counter() - start}
        print(f"check: dense at B={batch} predicted {predicted / 2**30:.2f} GiB, measured {measured / 2**30:.2f} GiB",
              flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("speed", "memory", "fit", "distributed"), default="speed")
    parser.add_argument("--world", type=int, nargs="+", default=[2, 8], help="distributed: processes simulated")
    parser.add_argument("--batch", type=int, nargs="+", default=[4096, 16384], help="batch sizes B")
    parser.add_argument("--dim", type=int, default=512, help="embedding width D")
    parser.add_argument("--chunk", type=int, nargs="+", default=[256], help="chunk sizes (memory/fit: the first)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up; the median is kept")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--budget_gb", type=float, default=16.0, help="fit: memory budget for the loss")
    # From B = 4096 on, each B x B float32 tensor (>= 64 MiB) is its own mmap, so peak RSS tracks the tensors exactly;
    # smaller ones land in malloc's heap, whose retained free blocks inflate the peak.
    parser.add_argument("--fit_batch", type=int, nargs="+", default=[4096, 6144, 8192, 12288], help="fit: B values")
    parser.add_argument("--verify_gb", type=float, default=0.0, help="fit: run dense at the B predicted for this")
    parser.add_argument("--_child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args._child:  # one CPU memory measurement in a fresh process
        print(measure_added_memory_here(args._child, args.batch[0], args.dim, args.chunk[0], args.device))
        return
    print(f"device {args.device}, threads {torch.get_num_threads()}, D={args.dim}, alpha={ALPHA}, beta={BETA}",
          flush=True)
    run = {"speed": run_speed, "memory": run_memory, "fit": run_fit, "distributed": run_distributed}[args.mode]
    results = run(args)
    summary = {"mode": args.mode, "device": args.device, "threads": torch.get_num_threads(), "dim": args.dim,
               "alpha": ALPHA, "beta": BETA, "logit_scale": LOGIT_SCALE, "results": results}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
