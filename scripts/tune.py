#!/usr/bin/env python
"""raydgp's entry point (also what ``ray submit cluster.yaml scripts/tune.py`` runs): ``raydgp tune``.

Tunes a whole network on an embedded local Ray, or on the cluster named by ``--address`` / ``RAY_ADDRESS``, then builds,
verifies and times the tuned library. Every ``raydgp tune`` option works here, e.g.::

    python scripts/tune.py --model resnet18 --trials 300 --out runs/r18
    python scripts/tune.py --model model.onnx --trials 200 --out runs/onnx
    python scripts/tune.py layer --workload conv2d:1,64,56,56,64,3,1,1 --trials 32   # one layer
"""

import sys

from raydgp.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args if args[:1] in (["tune"], ["layer"]) else ["tune", *args]))
