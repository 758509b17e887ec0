"""pgconnector's benchmark harness; ``bench/run.py`` is the entry point (see README, Benchmarks)."""
