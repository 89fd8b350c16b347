"""lenet: train, evaluate, run, export, benchmark and serve LeNet-5 on MNIST.

This module must stay import-light: `lenet --help` imports it, and it must not
pull in torch (2+ seconds on a small machine).
"""

__version__ = "0.2.0"
