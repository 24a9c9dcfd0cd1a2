"""Command line: ``raydgp layer ...`` (also ``python -m raydgp``).

Errors raised on purpose (:class:`~raydgp.errors.RayDGPError`) print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from raydgp.errors import RayDGPError

RESNET18_CONV = "conv2d:1,64,56,56,64,3,1,1"

#: ``raydgp tune`` without --trials and --time-budget: a trial budget it rarely reaches and a time budget that keeps
#: the whole command (set-up, tuning, build, verification, reference timings) to about 10 minutes on 2 cores.
DEFAULT_TRIALS = 2000
DEFAULT_TIME_BUDGET_S = 400.0

def _layer_parser(sub) -> None:
    p = sub.add_parser("layer", help="tune one layer (a workload spec) through Ray Tune",
                       description="Tune one DNN layer on this machine's CPU (or a GPU) with real TVM builds and "
                                   "timings, driven by Ray Tune.")
    p.add_argument("--workload", default=RESNET18_CONV,
                   help="conv2d:N,C,H,W,K,R,stride,pad | depthwise:N,C,H,W,R,stride,pad | dense:M,K,N "
                        f"(default: the ResNet-18 3x3 conv {RESNET18_CONV})")
    p.add_argument("--trials", type=int, default=32, help="configurations to measure (default 32)")
    p.add_argument("--out", default="runs/layer", help="output directory (records, MetaSchedule database, summary)")
    p.add_argument("--searcher", default="random", choices=["dgp", "random", "tpe", "hebo"],
                   help="dgp: deep-GP Bayesian optimisation with transfer from --history; random (default); tpe / "
                        "hebo: Ray Tune's OptunaSearch / HEBOSearch over the knobs (for comparisons; need optuna / "
                        "HEBO)")
    p.add_argument("--history", action="append", default=None,
                   help="record store (directory) of earlier tuning to transfer from; repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", default="llvm", choices=["llvm", "cuda"], help="llvm = this CPU; cuda = a GPU per trial")
    p.add_argument("--cpus-per-trial", type=int, default=None,
                   help="cores a trial owns and times with (default: all cores of this machine)")
    p.add_argument("--in-flight", type=int, default=None,
                   help="trials running at once (default: 2 on a CPU: the next one builds and the searcher refits "
                        "while one is timed, timings stay exclusive; one per GPU with --target cuda); 1: one after "
                        "another")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--build-timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--run-timeout", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--search-option", action="append", default=None, metavar="KEY=VALUE",
                   help="a SearchSettings field of the dgp searcher, e.g. random_interleave=0.2 or cold_start=off "
                        "(repeatable; raydgp.search.settings lists them)")
    p.add_argument("--seed-trials", type=int, default=4,
                   help="with --searcher dgp and --history: the first trials are the history's best schedules of "
                        "this shape and of the nearest other shapes, carried over to this layer (default 4; 0: none)")


def _tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="tune a whole network and build a verified, faster library",
                       description="Tune every layer of a network (one Ray Tune experiment per layer, one shared "
                                   "budget), then build, verify and time the tuned library.")
    p.add_argument("--model", default="resnet18",
                   help="resnet18 | mobilenet_v1 | vgg16 | alexnet | tiny_cnn, a path to an .onnx file, or "
                        "package.module:factory (with --input-shape). Default resnet18")
    p.add_argument("--input-shape", default=None, help="e.g. 1,3,224,224 (PyTorch factories, dynamic ONNX inputs)")
    p.add_argument("--trials", type=int, default=None,
                   help=f"trials for the whole model (default: {DEFAULT_TRIALS}, within the default time budget)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds from the start; no new layer chunk starts after it (default: "
                        f"{DEFAULT_TIME_BUDGET_S:.0f} s when --trials is not given either, so the whole command takes "
                        "about 10 minutes on a 2-core machine; else none)")
    p.add_argument("--out", default="runs/model", help="output directory; re-running resumes from its records")
    p.add_argument("--searcher", default="dgp", choices=["dgp", "random"], help="default dgp")
    p.add_argument("--history", action="append", default=None,
                   help="extra record store to pre-train on (repeatable); the shipped dataset and the user store "
                        "(~/.raydgp/records) are used unless --no-default-history")
    p.add_argument("--no-default-history", action="store_true",
                   help="start from this model's own records only (no shipped dataset, no user store)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", default="llvm", choices=["llvm", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="threads of a timing and of the final model (default: all cores)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="Ray CPUs a trial requests (default 1: builds overlap; timings are exclusive per node)")
    p.add_argument("--max-concurrent-layers", type=int, default=None,
                   help="layer experiments at once (default: cluster CPUs / cpus-per-trial, or GPUs)")
    p.add_argument("--in-flight", type=int, default=None,
                   help="trials in flight per layer experiment (default 1 on a CPU, where two layer experiments "
                        "run at once; 2: the next one builds and the searcher refits from its queue while one is "
                        "timed, timings stay exclusive; default with --target cuda: the cluster's GPUs)")
    p.add_argument("--chunk", type=int, default=16, help="trials per scheduler chunk (default 16)")
    p.add_argument("--warmup", type=int, default=8, help="every layer's first trials (default 8)")
    p.add_argument("--storage", default=None, help="Ray Tune storage_path (path or bucket URI; default OUT/ray)")
    p.add_argument("--callbacks", default="",
                   help="comma-separated trackers for every layer experiment: mlflow, wandb, tensorboard "
                        "(Ray's own logger callbacks; MLflow file store in OUT/mlruns and W&B offline in OUT/wandb "
                        "unless MLFLOW_TRACKING_URI / WANDB_MODE say otherwise)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--build-timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--run-timeout", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--search-option", action="append", default=None, metavar="KEY=VALUE",
                   help="a SearchSettings field of the dgp searcher, e.g. random_interleave=0.2 or cold_start=off "
                        "(repeatable; raydgp.search.settings lists them)")
    p.add_argument("--no-reference", action="store_true",
                   help="do not time PyTorch eager / ONNX Runtime after tuning (the tuned library is still verified "
                        "against the framework's output and timed once)")
    p.add_argument("--layout", default="auto", choices=["auto", "NHWC", "NCHW"],
                   help="activation layout the convolutions are tuned and built in (default auto: NHWC on CPU, "
                        "where the output channels are vectorized; NCHW on GPU)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raydgp", description="DNN deployment tuner: TVM + deep GP + Ray Tune")
    sub = parser.add_subparsers(dest="command", required=True)
    _tune_parser(sub)
    _layer_parser(sub)
    args = parser.parse_args(argv)
    import warnings

    # Library deprecation chatter (torch.export, TVM) is not for the user's console: errors stay one line.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from raydgp.logs import setup_console

    setup_console()
    try:
        from raydgp.measure.protocol import MeasureSettings

        if args.command == "tune":
            from raydgp.models.importer import parse_shape
            from raydgp.pipeline.model_job import run_model
            from raydgp.pipeline.settings import ModelRun

            threads = args.threads or os.cpu_count() or 1
            trials, time_budget = args.trials, args.time_budget
            if trials is None:
                trials = DEFAULT_TRIALS
                if time_budget is None:
                    time_budget = DEFAULT_TIME_BUDGET_S
            run = ModelRun(
                model=args.model, out=args.out, trials=trials, searcher=args.searcher,
                time_budget_s=time_budget, seed=args.seed, target_kind=args.target,
                input_shape=parse_shape(args.input_shape), history=tuple(args.history or ()),
                default_history=not args.no_default_history, cpus_per_trial=args.cpus_per_trial, threads=threads,
                address=args.address, max_concurrent_layers=args.max_concurrent_layers,
                search_options=tuple(args.search_option or ()), compare_reference=not args.no_reference,
                measure=MeasureSettings(build_timeout_s=args.build_timeout, run_timeout_s=args.run_timeout,
                                        num_threads=threads, device="cuda" if args.target == "cuda" else "cpu"),
                chunk=args.chunk, warmup=args.warmup, storage=args.storage, in_flight=args.in_flight,
                trackers=tuple(c for c in args.callbacks.split(",") if c.strip()), layout=args.layout)
            summary = run_model(run)
            return 0 if summary.get("verified") else 3
        if args.command == "layer":
            from raydgp.pipeline.layer_job import run_layer
            from raydgp.pipeline.settings import LayerRun

            cores = args.cpus_per_trial or os.cpu_count() or 1
            run_layer(LayerRun(
                workload=args.workload, out=args.out, trials=args.trials, searcher=args.searcher, seed=args.seed,
                target_kind=args.target, cpus_per_trial=cores, address=args.address,
                history=tuple(args.history or ()), search_options=tuple(args.search_option or ()),
                in_flight=args.in_flight, seed_trials=args.seed_trials,
                measure=MeasureSettings(build_timeout_s=args.build_timeout, run_timeout_s=args.run_timeout,
                                        num_threads=cores, device="cuda" if args.target == "cuda" else "cpu")))
        return 0
    except RayDGPError as e:
        print(f"raydgp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raydgp: interrupted; every finished measurement is in the records", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
