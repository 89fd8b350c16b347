"""Training: from a recipe and MNIST to a run folder of weights, history and curves.

* config.py: `TrainConfig`, the recipe, saved in every weights file and checkpoint.
* recipe.py: seeding, augmentation, optimizer, schedule, precision and the one training step.
* setup.py: `build_setup`, the one place a run is built (used by the loop and by `lenet bench`).
* loop.py: the epoch loop: steps, validation, best epoch, stops.
* divergence.py: a NaN loss or weight ends the run with one message.
* state.py: per-epoch records, the run's result and its complete state.
* checkpoint.py, resume.py: that state on disk, and the checks before continuing from it.
* run_dir.py: the run folder, its lock and its files.
* distributed.py: torchrun (DistributedDataParallel) launches.
* plots.py: training curves, the confusion matrix and misclassified digits as PNGs.
* session.py: one `lenet train`: folder, resume, torchrun, calibration and the test report.

May import: model/, data/, utils/, the top-level modules, torch, matplotlib.
"""
