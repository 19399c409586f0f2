"""``python -m sccore``: the command line."""

from .cli import main

raise SystemExit(main())
