"""Command line: ``raydgp layer ...`` (also ``python -m raydgp``).

Errors raised on purpose (:class:`~raydgp.errors.RayDGPError`) print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from raydgp.errors import RayDGPError

RESNET18_CONV = "conv2d:1,64,56,56,64,3,1,1"


def _layer_parser(sub) -> None:
    p = sub.add_parser("layer", help="tune one layer (a workload spec) through Ray Tune",
                       description="Tune one DNN layer on this machine's CPU (or a GPU) with real TVM builds and "
                                   "timings, driven by Ray Tune.")
    p.add_argument("--workload", default=RESNET18_CONV,
                   help="conv2d:N,C,H,W,K,R,stride,pad | depthwise:N,C,H,W,R,stride,pad | dense:M,K,N "
                        f"(default: the ResNet-18 3x3 conv {RESNET18_CONV})")
    p.add_argument("--trials", type=int, default=32, help="configurations to measure (default 32)")
    p.add_argument("--out", default="runs/layer", help="output directory (records, MetaSchedule database, summary)")
    p.add_argument("--searcher", default="random", choices=["dgp", "random"],
                   help="dgp: deep-GP Bayesian optimisation with transfer from --history; random (default)")
    p.add_argument("--history", action="append", default=None,
                   help="record store (directory) of earlier tuning to transfer from; repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", default="llvm", choices=["llvm", "cuda"], help="llvm = this CPU; cuda = a GPU per trial")
    p.add_argument("--cpus-per-trial", type=int, default=None,
                   help="cores a trial owns and times with (default: all cores of this machine)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--build-timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--run-timeout", type=float, default=30.0, help="seconds (default 30)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raydgp", description="DNN deployment tuner: TVM + deep GP + Ray Tune")
    sub = parser.add_subparsers(dest="command", required=True)
    _layer_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "layer":
            from raydgp.measure.protocol import MeasureSettings
            from raydgp.raytune.layer_job import tune_one_layer

            import os

            cores = args.cpus_per_trial or os.cpu_count() or 1
            settings = MeasureSettings(build_timeout_s=args.build_timeout, run_timeout_s=args.run_timeout,
                                       num_threads=cores, device="cuda" if args.target == "cuda" else "cpu")
            tune_one_layer(args.workload, trials=args.trials, out=args.out, searcher=args.searcher, seed=args.seed,
                           target_kind=args.target, cpus_per_trial=cores, address=args.address, settings=settings,
                           history=args.history)
        return 0
    except RayDGPError as e:
        print(f"raydgp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raydgp: interrupted; every finished measurement is in the records", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
