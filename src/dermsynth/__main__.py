"""`python -m dermsynth …` runs the command-line interface (as the `dermsynth` script does)."""

from .cli import main

raise SystemExit(main())
