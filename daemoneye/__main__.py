"""`python -m daemoneye` is the same as the `daemoneye` command."""

from daemoneye.cli import main

raise SystemExit(main())
