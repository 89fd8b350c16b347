"""`lenet bench`: speed on the machine it runs on, each measurement in a fresh process.

* plan.py: what is measured (`BenchConfig`) and the list of processes.
* processes.py: running one measuring process, or `lenet train --epochs 1`.
* worker.py: the measuring process itself (`python -m lenet_cli.bench.worker`).
* tutorial.py: the pipeline LeNet tutorials use, timed beside lenet's.
* report.py: the answers summarised as rows, with the machine.
* harness.py: `run_bench`, which runs the plan and builds the report.

May import: training/ (the same setup `lenet train` uses), export/, inference/, model/, data/, utils/.
"""
