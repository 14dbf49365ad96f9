"""Side-by-side benchmarks of hal0proxy against a direct connection and nginx (``python -m bench.run``)."""
