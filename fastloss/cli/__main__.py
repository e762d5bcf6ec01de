"""``python -m fastloss.cli``: the same as the `fastloss` command."""

from fastloss.cli.main import main

raise SystemExit(main())
