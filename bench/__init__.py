"""Benchmarks: scripts that print figures (never assertions). `python -m bench.run_all` runs them all;
each is also runnable on its own (`python -m bench.<name> --help`). Latest figures: bench/RESULTS.md."""
