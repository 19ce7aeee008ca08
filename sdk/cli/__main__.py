"""``python -m sdk.cli``: the ``sealroom`` command."""

from sdk.cli import main

raise SystemExit(main())
