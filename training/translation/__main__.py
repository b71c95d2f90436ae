"""`python -m training.translation`: the translation training job (training/translation/job.py)."""

from training.translation.job import main

raise SystemExit(main())
