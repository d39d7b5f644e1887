"""``python -m corral``: the command line (see ``corral --help``)."""

from ._cli import main

raise SystemExit(main())
