"""Encoder embedding speed: cells per second of the project's path against an eager PyTorch baseline.

The project's path: ``scaled_dot_product_attention``, bf16 autocast where the device supports it,
length-grouped batches (dynamic padding) and ``torch.inference_mode``. The baseline runs the same
weights with textbook attention (matmul + softmax), fp32, batches in the data's order padded to the
longest cell, under ``torch.no_grad``. Both run in the same process on the same cells.

    python benchmarks/bench_encoder_speed.py [--quick] [--write-results]
    python benchmarks/bench_encoder_speed.py --device cuda --peak-tflops 989 --write-results   # an H100 SXM

On a GPU the v1 row embeds 3,000 full 2,048-token cells (issue 3's target: >= 3,000 cells/s on one H100);
TFLOP/s counts the matrix multiplies of a forward pass (projections, feed-forward, attention scores and
values), and ``--peak-tflops`` turns it into the fraction of the device's dense bf16 peak.

Cells: the real Kang 2018 PBMCs (``../shared/data/kang_se.h5ad``) tokenized with their own
vocabulary (rank-value encoding; lengths are each cell's expressed genes, capped at the model's
input size), and for ``v1`` also full 2,048-token cells, the input size Geneformer V1 uses.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from results import command_line, write_section  # noqa: E402
import torch  # noqa: E402

from sccore.encode import bf16_supported, pool  # noqa: E402
from sccore.models import EncoderConfig, MaskedGeneModel, preset  # noqa: E402
from sccore.models.train import build_corpus, pad_batch  # noqa: E402
from sccore.tokenize import TokenizedCell  # noqa: E402

KANG = ROOT.parent / "shared" / "data" / "kang_se.h5ad"
SECTION = "## Encoder embedding speed (issue 3)"


def cells_per_second(model: MaskedGeneModel, cells: list[TokenizedCell], batch_size: int, optimised: bool) -> float:
    """Embed ``cells`` (the model's cell embedding) on the model's device and return cells per second."""
    device = next(model.parameters()).device
    order = (np.argsort([-len(c.tokens) for c in cells], kind="stable") if optimised else np.arange(len(cells)))
    autocast = optimised and bf16_supported(device)
    context = torch.inference_mode if optimised else torch.no_grad
    start = time.perf_counter()
    for batch_start in range(0, len(cells), batch_size):
        rows = order[batch_start:batch_start + batch_size]
        tokens, attention, bins = pad_batch([cells[i] for i in rows], device)
        with context(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            states = model.encoder(tokens, attention)
            pool(states, attention, "mean", False).float()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(cells) / (time.perf_counter() - start)


def flops_per_cell(config: EncoderConfig, length: int) -> float:
    """Matrix-multiply FLOPs of one forward pass over ``length`` tokens: projections, feed-forward, attention."""
    d, ff = config.d_model, config.d_ff
    return config.n_layers * (2 * length * (4 * d * d + 2 * d * ff) + 4 * length * length * d)


def measure(config: EncoderConfig, cells: list[TokenizedCell], batch_size: int, repeats: int,
            device: torch.device) -> dict:
    """Best-of-``repeats`` cells/s of the optimised path and of the eager fp32 baseline, same weights."""
    torch.manual_seed(0)
    model = MaskedGeneModel(config).eval().to(device)
    eager = MaskedGeneModel(EncoderConfig(**{**config.__dict__, "attention": "eager"})).eval().to(device)
    eager.load_state_dict(model.state_dict())
    cells_per_second(model, cells[:batch_size], batch_size, True)  # warm-up
    cells_per_second(eager, cells[:batch_size], batch_size, False)
    optimised = max(cells_per_second(model, cells, batch_size, True) for _ in range(repeats))
    baseline = max(cells_per_second(eager, cells, batch_size, False) for _ in range(repeats))
    lengths = np.array([len(c.tokens) for c in cells])
    tflops = optimised * float(np.mean([flops_per_cell(config, n) for n in lengths])) / 1e12
    return {"config": config.name, "cells": len(cells), "median_tokens": int(np.median(lengths)),
            "max_tokens": int(lengths.max()), "optimised": optimised, "baseline": baseline,
            "ratio": optimised / baseline, "tflops": tflops}


def full_length_cells(n_cells: int, length: int, vocab_size: int, seed: int = 0) -> list[TokenizedCell]:
    """Cells of exactly ``length`` distinct random gene tokens (no padding), for a fixed-size measurement."""
    rng = np.random.default_rng(seed)
    return [TokenizedCell(rng.choice(np.arange(3, vocab_size), length, replace=False), np.zeros(length, np.int64))
            for _ in range(n_cells)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few cells, for a smoke test")
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement (best kept)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    parser.add_argument("--long-cells", type=int, default=0,
                        help="cells of 2,048 tokens for the v1 row (default 24 on a CPU, 3,000 on a GPU)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the device's dense bf16 peak (e.g. 989 for an H100 SXM), to report the fraction reached")
    args = parser.parse_args()
    from sccore.device import describe, resolve_device

    device = resolve_device(args.device)
    from sccore.io import open_dataset

    adata = open_dataset(KANG)
    sizes = {"small": 32, "v1": 16, "long": 4} if args.quick else {"small": 512, "v1": 256, "long": 24}
    if args.long_cells or (device.type == "cuda" and not args.quick):
        sizes["long"] = args.long_cells or 3000
    results = []
    for name in ("small", "v1"):
        rows = np.random.default_rng(0).choice(adata.n_obs, sizes[name], replace=False)
        probe = preset(name, 3)
        vocabulary, _, cells = build_corpus(adata[np.sort(rows)].copy(), probe.max_length, 0, False)
        config = preset(name, len(vocabulary), dropout=0.0)
        results.append(measure(config, cells, 32, args.repeats, device))
        if name == "v1":
            long_config = preset(name, 20_000, dropout=0.0)
            results.append(measure(long_config, full_length_cells(sizes["long"], 2048, 20_000),
                                   64 if device.type == "cuda" else 8, args.repeats, device))
            results[-1]["config"] = "v1 (2,048 tokens, 20k-gene vocabulary)"
    header = ("| model | cells | median / max tokens | project cells/s | eager fp32 baseline cells/s | speed-up | "
              "project TFLOP/s | fraction of bf16 peak |\n|---|---|---|---|---|---|---|---|")
    rows_md = [f"| {r['config']} | {r['cells']:,} | {r['median_tokens']} / {r['max_tokens']} | {r['optimised']:.1f} | "
               f"{r['baseline']:.1f} | {r['ratio']:.2f}x | {r['tflops']:.2f} | "
               f"{r['tflops'] / args.peak_tflops:.1%} |" if args.peak_tflops else
               f"| {r['config']} | {r['cells']:,} | {r['median_tokens']} / {r['max_tokens']} | {r['optimised']:.1f} | "
               f"{r['baseline']:.1f} | {r['ratio']:.2f}x | {r['tflops']:.2f} | - |" for r in results]
    table = "\n".join([header, *rows_md])
    machine = (f"{describe(device)}; {os.cpu_count()} CPU cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, bf16 autocast {'on' if bf16_supported(device) else 'off'}")
    print(table)
    print(machine)
    if args.write_results and not args.quick:
        command = command_line()
        section = (f"Command: `{command}`\n\nDate: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
                   f"Machine: {machine}."
                   + (" No GPU here: the GPU figure (`--device cuda --peak-tflops ...`) is still to be measured."
                      if device.type != "cuda" else "") + "\n\n"
                   f"{__doc__.split(chr(10) + chr(10))[1]}\n\n{table}\n")
        write_section(SECTION, section)


if __name__ == "__main__":
    main()
