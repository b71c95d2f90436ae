"""Datasets of the training jobs: read straight out of pinned archives (or synthesised for tests),
cleaned, de-duplicated and split reproducibly."""
