"""``python -m lossbench.bench``: see :mod:`lossbench.bench`."""

from lossbench.bench import main

raise SystemExit(main())
