"""What this machine offers lenet: versions, devices, providers, MNIST and the bundled model (`lenet checks`).

* probe.py: package versions, the CPU from /proc/cpuinfo, CUDA and MPS through torch, the driver
  through libcuda, onnxruntime's providers.
* report.py: `run_checks`, all of it in one `ChecksReport`, with MNIST's files and the bundled model.

Nothing here downloads anything or writes a file. torch is imported only when devices are asked
for (`lenet checks --no-torch` leaves it out); onnxruntime only for its providers.

May import: data/, model/ (weights files, no torch), the top-level modules, torch and onnxruntime
inside functions.
"""
