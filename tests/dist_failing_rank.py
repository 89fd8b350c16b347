"""`lenet` with rank 1 pointed at a data folder that does not exist: a launch where one process fails.

Run by tests/test_distributed.py under torchrun; not a test module itself (pytest collects test_*.py).
"""

import os
import sys

from lenet_cli.cli.app import main

if os.environ.get("RANK") == "1":
    at = sys.argv.index("--data-dir") + 1
    sys.argv[at] += "-missing-on-rank-1"
main()
