"""The network and everything that is a fact about one trained model.

* lenet5.py: LeNet-5 from a frozen `ModelConfig` (presets "modern" and "classic"), readable beside the paper.
* cpu_paths.py: faster CPU forward passes with the same parameters (`speed_up`).
* weights.py: safetensors weights files that describe themselves (config and metrics inside).
* metrics.py: accuracy, loss, per-class figures and the confusion matrix from logits.
* calibration.py: the temperature that calibrates a model's probabilities.

May import: torch, safetensors, numpy, and lenet_cli's top-level modules and utils/.
Nothing here knows about training runs, files of images, or the command line.
"""
