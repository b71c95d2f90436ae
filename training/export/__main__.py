"""`python -m training.export`: device export packages (training/export/job.py)."""

from training.export.job import main

raise SystemExit(main())
