"""`python -m training.generation`: the generation training job (training/generation/job.py)."""

from training.generation.job import main

raise SystemExit(main())
