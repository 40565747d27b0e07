"""Hand-run benchmarks of Prism (never timed tests): ``python -m benchmarks.<name>``.

Each benchmark prints JSON lines on stdout; see ``benchmarks/README.md``.
"""
