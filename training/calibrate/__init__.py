"""`python -m training.calibrate`: wrap an already fine-tuned checkpoint into an artifact without training."""
