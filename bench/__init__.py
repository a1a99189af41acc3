"""treadle benchmarks: `python -m bench` (see docs/benchmarks.md). Not part of the test suite."""
