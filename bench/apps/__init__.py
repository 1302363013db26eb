"""Apps the benchmarks deploy, run as modules of this package (`python -m bench.apps.benchapp`)."""
