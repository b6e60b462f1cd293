import sys

from vidcli.testing.cli import main

sys.exit(main())
