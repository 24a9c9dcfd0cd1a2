"""Reporting: the one-line console progress, the tuning-curves plot, the final per-layer table."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

log = logging.getLogger("raydgp.pipeline")


def finite(v) -> float | None:
    """``v`` rounded for JSON, or None if it is missing or not finite."""
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


class Progress:
    """Live console progress: trials, layers done, model estimate, a bar (rewritten in place on a terminal).

    "Layers done" never goes backwards: a layer counted done stays done (a layer can look done while its results are
    pending and then be handed another chunk; the count shows the most it has been).
    """

    def __init__(self, total: int, n_layers: int, stream=None):
        self.total, self.n_layers = total, n_layers
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0
        self.layers_done = 0

    def line(self, used: int, layers_done: int, est_ms: float, running: list[str]) -> str:
        self.layers_done = min(self.n_layers, max(self.layers_done, layers_done))
        w = 24
        fill = int(w * min(used, self.total) / max(1, self.total))
        est = f"{est_ms:.2f} ms" if math.isfinite(est_ms) else "-"
        run = ", ".join(r[:28] for r in running[:2]) + (" ..." if len(running) > 2 else "")
        return (f"[{'#' * fill}{'-' * (w - fill)}] {used}/{self.total} trials, {self.layers_done}/{self.n_layers} "
                f"layers done, est. {est} (sum of layer bests), {time.monotonic() - self.t0:.0f} s"
                + (f"; tuning {run}" if run else ""))

    def show(self, used: int, layers_done: int, est_ms: float, running: list[str], final: bool = False) -> None:
        now = time.monotonic()
        line = self.line(used, layers_done, est_ms, running)
        if not final and not self.tty and now - self._last < 10:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def plot_curves(path: Path, estimate: list[tuple[int, float]], states, top: int = 6) -> None:
    """``tuning_curves.png``: the model's estimated latency (sum of weight x layer best) against the trials done, and
    the best-so-far curves of the ``top`` layers that weigh most in that estimate (not every layer: with 20+ the
    lines only hide each other)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8))
    pts = [(t, v) for t, v in estimate if math.isfinite(v)]
    if pts:
        a1.plot([t for t, _ in pts], [v for _, v in pts], marker=".", color="C0")
    a1.set_xlabel("trials, whole model")
    a1.set_ylabel("estimated model latency (ms)")
    a1.set_yscale("log")
    a1.set_title("model: sum over layers of weight x best")
    a1.grid(alpha=0.3)
    heavy = sorted(states, key=lambda s: -s.weight * s.estimate_ms())[:top]
    for s in heavy:
        ys = [v if math.isfinite(v) else math.nan for v in s.curve]
        if ys and any(math.isfinite(v) for v in ys):
            a2.plot(range(1, len(ys) + 1), [s.weight * v for v in ys], label=f"{s.name[:32]} (x{s.weight})")
    a2.set_xlabel("trials of the layer")
    a2.set_ylabel("weight x best latency so far (ms)")
    a2.set_yscale("log")
    a2.set_title(f"the {len(heavy)} layers that weigh most")
    a2.grid(alpha=0.3)
    if heavy:
        a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: dict) -> list[str]:
    """The final per-layer table and the end-to-end line, as text lines."""
    rows = summary["layers"]
    w = max([len(r["name"]) for r in rows] + [5])
    out = [f"{'layer':<{w}} {'weight':>6} {'trials':>6} {'untuned ms':>11} {'best ms':>9} {'speedup':>8} "
           f"{'fallback':>8}"]
    for r in rows:
        un, be = r["untuned_ms"], r["best_ms"]
        sp = f"{un / be:.1f}x" if (un and be) else "-"
        fb = (r.get("proposals") or {}).get("fallback", 0)
        out.append(f"{r['name']:<{w}} {r['weight']:>6} {r['trials']:>6} "
                   f"{un if un is not None else float('nan'):>11.3f} {be if be is not None else float('nan'):>9.3f} "
                   f"{sp:>8} {fb:>8}")
    e2e = summary["end_to_end_ms"]
    parts = [f"end to end: tuned {e2e:.3f} ms" if e2e is not None else
             f"end to end: tuned build NOT verified ({summary.get('verify_message', '')})",
             f"untuned {summary['untuned_end_to_end_ms']:.3f} ms" if summary["untuned_end_to_end_ms"] else "",
             f"PyTorch eager {summary['pytorch_ms']:.3f} ms" if summary["pytorch_ms"] else "",
             f"ONNX Runtime {summary['onnxruntime_ms']:.3f} ms" if summary["onnxruntime_ms"] else ""]
    out.append(", ".join(p for p in parts if p) + f"; {summary['trials_total']} trials, {summary['wall_s']:.0f} s")
    fb = summary.get("proposals", {})
    if fb.get("fallback"):
        out.append(f"warning: {fb['fallback']} of {fb.get('total', 0)} proposals came from the random fallback "
                   "(the model failed; see the log)")
    return out
