"""DaemonEye's benchmark suite: every speed and memory target measured side by side with the
physical floor (reading /proc from C and from Python) and with `top` and `htop`, in one run.

Not part of the test suite (pytest collects tests/ only). Run it with ``python -m benchmarks``;
see ``python -m benchmarks --help``. Machines are shared and noisy, so every figure is also given
as a ratio against a reference measured in the same run, with its median and spread.
"""
