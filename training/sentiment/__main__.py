"""`python -m training.sentiment`: the sentiment training job (training/sentiment/job.py)."""

from training.sentiment.job import main

raise SystemExit(main())
