import sys

from raydgp.cli import main

sys.exit(main())
