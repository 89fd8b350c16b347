"""How the training recipe's defaults were chosen: train variants, compare them on the validation split.

    python scripts/recipe_search.py --data-dir path/to/mnist --epochs 15 --seeds 1 2 3 \
        base: no_smoothing:label_smoothing=0 ema:ema_decay=0.999

Each variant is `name:` followed by comma-separated TrainConfig fields (`field=value`) on top of
the recipe for the epoch budget (`TrainConfig.for_budget`), and model fields as `model.field=value`
(`model.dropout=0`): those train a variant of the preset, registered under the variant's name for
this process only (lenet's own presets are untouched). Every run is a real `lenet` training
run through the library; the printed figure for choosing is the validation accuracy (5,000 held-out
training images). The test accuracy is printed too, for reporting only: choices are made on
validation. Runs one variant and seed at a time in this process; set OMP_NUM_THREADS to choose
the threads (two runs side by side with one thread each use two cores best).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

from lenet_cli.data.mnist import load_split, train_val_split
from lenet_cli.model.metrics import summarize, torch_logits
from lenet_cli.model.cpu_paths import speed_up
from lenet_cli.model.lenet5 import PRESETS, ModelConfig, build_model
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.loop import train


def typed(value: str, default: object) -> object:
    """`value` as the type of the field's default."""
    return (value.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(value)


def parse_variant(text: str) -> tuple[str, dict]:
    """`name:field=value,model.field=value` -> (name, TrainConfig settings), registering a model variant."""
    name, _, body = text.partition(":")
    settings, model = {}, {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        target, config, key = (model, ModelConfig, key[6:]) if key.startswith("model.") else (settings, TrainConfig, key)
        if key not in {f.name for f in dataclasses.fields(config)}:
            sys.exit(f"unknown {config.__name__} field {key!r}")
        target[key] = typed(value, getattr(config(), key))
    if model:
        base = PRESETS[settings.get("preset", TrainConfig.preset)]
        PRESETS[name] = dataclasses.replace(base, preset=name, **model)
        settings["preset"] = name
    return name, settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", help="name:field=value,... (see the module docstring)")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args()
    device = torch.device("cpu")
    full = load_split(args.data_dir, "train", allow_download=False)
    test = load_split(args.data_dir, "test", allow_download=False)
    print(f"{'variant':24} {'seed':>4} {'val':>7} {'test':>7} {'train s':>8}", flush=True)
    for text in args.variants:
        name, settings = parse_variant(text)
        vals, tests = [], []
        for seed in args.seeds:
            cfg = TrainConfig.for_budget(args.epochs, seed=seed, **settings)
            train_split, val_split = train_val_split(full, cfg.val_size)
            result = train(cfg, train_split, val_split, device)
            model = build_model(result.model.cfg)
            model.load_state_dict(result.best_state)
            test_acc = summarize(torch_logits(speed_up(model, device), test.images), test.labels.long()).accuracy
            vals.append(result.best.val_acc)
            tests.append(test_acc)
            print(f"{name:24} {seed:4d} {100 * vals[-1]:6.2f}% {100 * test_acc:6.2f}% {result.train_seconds:8.1f}",
                  flush=True)
        print(f"{name:24} {'med':>4} {100 * statistics.median(vals):6.2f}% {100 * statistics.median(tests):6.2f}%",
              flush=True)


if __name__ == "__main__":
    main()
