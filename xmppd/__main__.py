import sys

from xmppd.cli import main

sys.exit(main())
