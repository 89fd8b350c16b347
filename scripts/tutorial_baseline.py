"""The pipeline `lenet train` is compared with: a typical LeNet-5 tutorial, run for real.

    python scripts/tutorial_baseline.py --data-dir path/to/mnist [--epochs 15] [--json]

What the tutorials do, kept as they do it: torchvision's `datasets.MNIST` with per-sample
`ToTensor()` + `Normalize()`, a `DataLoader` with batch 64 and shuffling (no workers),
a LeNet-5 with ReLU and max pooling, Adam at 1e-3, and a test pass after every epoch.
It prints wall-clock seconds per epoch, the total, and the test accuracy, so the
README's "tutorial vs lenet" ratio is measured on the machine at hand, not quoted.

The MNIST .gz files are decompressed into a temporary folder in the layout torchvision
expects (MNIST/raw/); nothing is downloaded and the source folder is never written.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the four MNIST .gz files")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args()

    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from lenet_cli.bench.tutorial import tutorial_lenet

    torch.manual_seed(args.seed)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    with tempfile.TemporaryDirectory(prefix="lenet-tutorial-") as tmp:
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in names:
            src = args.data_dir / f"{name}.gz"
            if not src.is_file():
                print(f"error: {src} not found", file=sys.stderr)
                return 1
            (raw / name).write_bytes(gzip.decompress(src.read_bytes()))
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        train_set = datasets.MNIST(tmp, train=True, download=False, transform=tf)
        test_set = datasets.MNIST(tmp, train=False, download=False, transform=tf)

        model = tutorial_lenet()  # the same model `lenet bench` times as the tutorial pipeline
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
        test_loader = DataLoader(test_set, batch_size=1000)

        epochs = []
        start = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            for x, y in train_loader:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in test_loader:
                    correct += (model(x).argmax(1) == y).sum().item()
            acc = correct / len(test_set)
            epochs.append({"epoch": epoch, "seconds": time.perf_counter() - t0, "test_accuracy": acc})
            if not args.json:
                print(f"epoch {epoch:2d}  {epochs[-1]['seconds']:6.1f}s  test accuracy {acc:.2%}", flush=True)
        total = time.perf_counter() - start

    summary = {
        "pipeline": "torchvision datasets.MNIST + ToTensor/Normalize per sample, DataLoader batch 64, Adam 1e-3",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "total_seconds": total,
        "final_test_accuracy": epochs[-1]["test_accuracy"],
        "history": epochs,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"total {total:.1f}s for {args.epochs} epochs; final test accuracy {summary['final_test_accuracy']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
