"""Benchmarks for asgi-cleanup: ``python -m benchmarks`` runs them and prints ratios."""
