"""Train the demo checkpoint committed under assets/demo_model (the `small` config).

Data: the embedded demo (scanpy's pbmc68k_reduced: 700 PBMCs, 765 genes, integer counts recovered
from its log-normalised values; library sizes from the whole-transcriptome totals). No labels are
used: the `small` preset's self-supervised objective (every gene's counts from its latent cell embedding).
Seed 0, 30 epochs of 22 steps (batch 32), AdamW at the default learning rate (3e-3) with 5 % warm-up and linear
decay, on the CPU. Reproduce with:

    python scripts/train_demo_model.py            # writes assets/demo_model/ (2 to 3 minutes on 2 cores)
"""

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from sccore.io import load_demo
from sccore.models import TrainConfig, train
from sccore.models.train import STATE

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    adata = load_demo()
    bar = tqdm(total=100, unit="%")
    config = TrainConfig(epochs=args.epochs, batch_size=32, eval_every=100, seed=args.seed, device="cpu")
    history = train(adata, args.out, "small", config, library_size_key="full_total_umis", resume=False,
                    progress=lambda fraction, message: (bar.update(round(fraction * 100) - bar.n),
                                                        bar.set_postfix_str(message)))
    bar.close()
    (Path(args.out) / STATE).unlink(missing_ok=True)  # optimizer state: needed to resume, not to embed
    print(f"validation loss {history['val_loss'][0]:.3f} -> {history['val_loss'][-1]:.3f}; model in {args.out}")


if __name__ == "__main__":
    main()
