"""`python -m xmppd`: the same as the `xmppd` command (xmppd/cli.py)."""

import sys

from xmppd.cli import main

sys.exit(main())
