"""Add or refit the OOD statistics of an existing artifact without retraining: `python -m training.ood`."""
