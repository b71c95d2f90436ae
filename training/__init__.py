"""Training jobs (python -m training.sentiment|translation|generation) and what they share: configs, the
training loop, LR schedules, checkpoints, metrics, calibration, reports and pinned data fetching.
Imports `models` (never `service`); the only contract with serving is the artifact directory."""
