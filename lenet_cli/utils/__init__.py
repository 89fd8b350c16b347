"""Small helpers every layer may use: atomic file writes, timing, Ctrl-C handling, JSON-safe values.

* fileio.py: atomic writes, folders, "nothing replaced unless asked".
* timing.py: repeated timed calls and their spread.
* signals.py: `StopSignal`, a first Ctrl-C or SIGTERM that asks to stop, a second that aborts.
* serialization.py: a config's field types checked, JSON without NaN.
* memory.py: let lenet's own processes reuse the memory they free (glibc's thresholds).

May import: the standard library and lenet_cli.errors; nothing else of lenet_cli.
"""
