#!/usr/bin/env python
"""raydgp's entry point (also what ``ray submit cluster.yaml scripts/tune.py`` runs).

For now it tunes one built-in layer, the ResNet-18 3x3 conv (64 channels, 56x56), on an embedded local Ray, or on the
cluster named by ``--address`` / ``RAY_ADDRESS``. Every ``raydgp layer`` option works here, e.g.::

    python scripts/tune.py --trials 32 --out runs/conv
    python scripts/tune.py --workload conv2d:1,128,28,28,128,3,1,1 --trials 64
"""

import sys

from raydgp.cli import main

if __name__ == "__main__":
    sys.exit(main(["layer", *sys.argv[1:]]))
