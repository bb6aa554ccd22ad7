"""On-device head refit: ``edgetune.edge.head.fit_head`` vs scikit-learn's LogisticRegression.

Run: ``python benchmarks/bench_head_fit.py`` (about 5 s on 2 cores, more while other processes
are busy; needs scikit-learn, which is in the ``export`` extra; the device never imports it).

Both fit the same model, multinomial logistic regression with an L2 penalty on the weights (not
the bias), to the same data, and both use L-BFGS:

- **edgetune** ``fit_head(x, labels, l2=1e-3, steps=300)`` (its defaults), from scratch (no warm
  start, no replay set), NumPy float64. It minimises
  ``mean_i CE_i + l2/2 * ||W||^2`` and stops at ``max|grad| < 1e-7``, a relative loss change
  ``<= 1e-10`` or 300 iterations.
- **scikit-learn** ``LogisticRegression(solver="lbfgs", C=1/(l2*N), max_iter=300)``: scikit-learn
  minimises ``C * sum_i CE_i + 1/2 * ||W||^2``; dividing by ``C*N`` gives edgetune's objective when
  ``C = 1 / (l2 * N)`` (N = training samples). Its intercept is not penalised either. Two rows:
  its default ``tol=1e-4`` (a looser stop than edgetune's), and ``tol=1e-7`` (edgetune's gradient
  tolerance), so that both run to the same precision.

Data: synthetic Gaussian clusters (class means drawn at random, unit-variance noise, a separation
chosen so that the task is not trivial), 200 training samples and 2,000 held-out samples, for
D in {64, 512} and C in {5, 25}. Time: median of repeated fits after warm-up, ``time.perf_counter``;
accuracy on the held-out samples; and the objective each solution reaches (lower is better; equal
means the same optimum).
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _machine import machine_info  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_TRAIN = 200
N_TEST = 2000
L2 = 1e-3
STEPS = 300
SEPARATION = 7.0  # distance between two class means, in noise standard deviations


def clusters(d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train [N, D] float32, y_train [N], x_test, y_test): Gaussian clusters around random means.

    Noise N(0, 1) per dimension; class means N(0, s^2) per dimension with s chosen so that two
    means lie SEPARATION noise standard deviations apart on average (whatever D is).
    """
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((c, d)) * (SEPARATION / np.sqrt(2.0 * d))  # [C, D]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % c
        rng.shuffle(y)
        return (means[y] + rng.standard_normal((n, d))).astype(np.float32), y

    x_train, y_train = draw(N_TRAIN)
    x_test, y_test = draw(N_TEST)
    return x_train, y_train, x_test, y_test


def objective(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """mean cross-entropy + l2/2 ||W||^2, the function both minimise (float64)."""
    logits = x.astype(np.float64) @ w.T.astype(np.float64) + b.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean() + 0.5 * l2 * (w.astype(np.float64) ** 2).sum())


class _StepCounter(logging.Handler):
    """Reads the L-BFGS iteration count from fit_head's DEBUG log line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.steps: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("fit_head:"):
            self.steps = int(record.args[2])


def table(configs, *, threads: int | None, repeats: dict[int, int], counter: _StepCounter,
          interleave: bool = True, strict_sklearn: bool = True) -> None:
    """Fit every configuration with each implementation; print one row per implementation.

    ``interleave``: the implementations take turns fit by fit (rotating order); otherwise each
    makes all its fits in one block (with several threads, one library's spinning OpenMP or BLAS
    threads would otherwise slow the next library's fit).
    """
    from edgetune.edge.head import fit_head
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    header = (f"{'D':>4} {'C':>3}  {'implementation':<32} {'median ms':>9} {'p90 ms':>7} {'iters':>5} "
              f"{'objective':>10} {'held-out acc':>12}  {'vs edgetune':>11}")
    print(header)
    print("-" * len(header))
    with threadpool_limits(limits=threads):
        for d, c in configs:
            x, y, xt, yt = clusters(d, c, seed=d + c)
            names = [f"class_{k:02d}" for k in y]

            def edgetune_fit(x=x, names=names):
                w, b, labels = fit_head(x, names, l2=L2, steps=STEPS)
                order = [int(label.split("_")[1]) for label in labels]  # rows follow `labels`
                w_sorted, b_sorted = np.empty_like(w), np.empty_like(b)
                w_sorted[order], b_sorted[order] = w, b
                return w_sorted, b_sorted, counter.steps

            def sklearn_fit(tol: float, x=x, y=y):
                def fit():
                    model = LogisticRegression(solver="lbfgs", C=1.0 / (L2 * N_TRAIN), max_iter=STEPS, tol=tol)
                    model.fit(x, y)
                    return model.coef_, model.intercept_, int(np.max(model.n_iter_))
                return fit

            impls = {"edgetune fit_head": edgetune_fit,
                     "sklearn lbfgs, tol=1e-4 (default)": sklearn_fit(1e-4)}
            if strict_sklearn:
                impls["sklearn lbfgs, tol=1e-7"] = sklearn_fit(1e-7)
            times: dict[str, list[float]] = {name: [] for name in impls}
            fitted = {name: fn() for name, fn in impls.items()}  # also the warm-up
            order = list(impls)
            if interleave:  # rotating order, so background load falls on all alike
                schedule = [name for r in range(repeats[d]) for name in order[r % len(order):] + order[:r % len(order)]]
            else:
                schedule = [name for name in order for _ in range(repeats[d])]
            for name in schedule:
                t0 = time.perf_counter()
                impls[name]()
                times[name].append(1000.0 * (time.perf_counter() - t0))
            base = statistics.median(times["edgetune fit_head"])
            for name in impls:
                w, b, iters = fitted[name]
                acc = float(np.mean(np.argmax(xt @ w.T + b, axis=1) == yt))
                med = statistics.median(times[name])
                p90 = float(np.percentile(times[name], 90))
                print(f"{d:>4} {c:>3}  {name:<32} {med:>9.2f} {p90:>7.2f} {iters:>5} "
                      f"{objective(w, b, x, y, L2):>10.6f} {acc:>12.3f}  {base / med:>10.2f}x")


def main() -> None:
    warnings.filterwarnings("ignore")
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    head_log = logging.getLogger("edgetune.edge.head")
    counter = _StepCounter()
    head_log.addHandler(counter)
    head_log.setLevel(logging.DEBUG)
    head_log.propagate = False

    print(f"Head refit: multinomial logistic regression, L-BFGS, {N_TRAIN} training / {N_TEST} held-out samples "
          f"(Gaussian clusters), l2 = {L2:g} -> scikit-learn C = 1/(l2*N) = {1 / (L2 * N_TRAIN):g}, "
          f"at most {STEPS} iterations; float32 inputs to both")
    print(machine_info(numpy=np.__version__, scipy=scipy.__version__, **{"scikit-learn": sklearn.__version__}))
    pools = sorted({f"{p['internal_api']} x{p['num_threads']}" for p in threadpool_info()})
    print(f"thread pools loaded: {', '.join(pools)}")
    print()
    configs = [(64, 5), (64, 25), (512, 5), (512, 25)]
    print("A. BLAS and OpenMP limited to 1 thread for both (threadpoolctl): the comparison")
    table(configs, threads=1, repeats={64: 30, 512: 15}, counter=counter)
    print()
    print("B. default threads (2 per pool), largest case only, each implementation's fits in one block: what")
    print("   multi-threaded BLAS and OpenMP loops do to a 200-sample problem on 2 cores")
    table([(512, 25)], threads=None, repeats={512: 5}, counter=counter, interleave=False, strict_sklearn=False)
    print()
    print("(vs edgetune: edgetune's median time / this one's; > 1 means faster than edgetune. iters: L-BFGS "
          "iterations. objective: mean cross-entropy + l2/2 ||W||^2 on the training set, which both minimise)")


if __name__ == "__main__":
    main()
