"""Device export packages of trained artifacts (`python -m training.export`, training/export/package.py)."""
