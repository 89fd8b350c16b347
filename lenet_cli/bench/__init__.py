"""`lenet bench`: speed on the machine it runs on, each measurement in a fresh process.

* plan.py: what is measured (`BenchConfig`) and the list of processes.
* processes.py: running one measuring process, or `lenet train --epochs 1`.
* worker.py: the measuring process itself (`python -m lenet_cli.bench.worker`).
* tutorial.py: the pipeline LeNet tutorials use, timed beside lenet's.
* report.py: the answers summarised as rows, with the machine.
* harness.py: `run_bench`, which runs the plan and builds the report.
* predict_path.py, images.py: the predict path's jobs and the real-image inputs they time.
* serve_load.py, bare_server.py: `--serve`, `lenet serve` beside a bare FastAPI endpoint under one client.

May import: training/ (the same setup `lenet train` uses), export/, inference/, model/, data/, utils/.
"""
