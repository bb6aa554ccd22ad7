"""The linear head in NumPy: class posteriors, and the on-device refit of the last layer.

``logits = embedding @ weight.T + bias`` (the bundle's contract, see ``contract/tensors.py``).
:func:`fit_head` is multinomial logistic regression fitted with L-BFGS in float64: convex, so it
converges to the same optimum from any start, and deterministic (no random numbers anywhere).
Warm starting from the current head only makes it converge in fewer steps. Forgetting is held
off by the replay samples mixed into the fit, with every class weighing the same in total, so
neither a new word enrolled from six clips nor the replayed classes drown the other (measured
on the demo's three new words: 85% of them learned instead of 65%, for 2 points of the old
words).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Defaults of :func:`fit_head`.
DEFAULT_L2 = 1e-3
DEFAULT_STEPS = 300
_LBFGS_MEMORY = 10


@dataclass(frozen=True, eq=False)
class Head:
    """A linear head. ``weight`` float32 [C, D], ``bias`` float32 [C], ``labels`` C names."""

    weight: np.ndarray
    bias: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        weight = np.ascontiguousarray(self.weight, dtype=np.float32)
        bias = np.ascontiguousarray(self.bias, dtype=np.float32)
        labels = tuple(str(x) for x in self.labels)
        if weight.ndim != 2:
            raise ValueError(f"head weight has shape {weight.shape}; expected [C, D]")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"head bias has shape {bias.shape}; expected [{weight.shape[0]}] to match weight")
        if len(labels) != weight.shape[0] or len(set(labels)) != len(labels):
            raise ValueError(f"head labels {labels!r}; expected {weight.shape[0]} distinct names to match weight")
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise ValueError("head weight or bias contains NaN or Inf")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "labels", labels)

    @property
    def embedding_size(self) -> int:
        return int(self.weight.shape[1])

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Class posteriors, float32 [B, C] for embeddings [B, D] (or [C] for one [D])."""
        return predict_proba(embeddings, self.weight, self.bias)

    def predict(self, embeddings: np.ndarray) -> list[str]:
        """The most likely label of each embedding [B, D]."""
        proba = self.predict_proba(np.atleast_2d(embeddings))
        return [self.labels[i] for i in np.argmax(proba, axis=1)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def predict_proba(embeddings: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Softmax of ``embeddings @ weight.T + bias``: [B, D] -> float32 [B, C]; [D] -> [C]."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.shape[-1] != weight.shape[1]:
        raise ValueError(f"embeddings have width {emb.shape[-1]}; the head expects {weight.shape[1]}")
    logits = emb @ weight.T + bias  # (..., D) @ (D, C) -> (..., C)
    return _softmax(logits.astype(np.float32, copy=False))


def fit_head(
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    init_weight: np.ndarray | None = None,
    init_bias: np.ndarray | None = None,
    init_labels: Sequence[str] | None = None,
    replay: tuple[np.ndarray, Sequence[str]] | None = None,
    replay_weight: float = 1.0,
    l2: float = DEFAULT_L2,
    balance: bool = True,
    steps: int = DEFAULT_STEPS,
    anchor: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Fit a linear head by multinomial logistic regression.

    Args:
        embeddings: float [N, D], the new labelled samples.
        labels: N label names; names the current head lacks become new classes.
        init_weight, init_bias, init_labels: the current head ([C0, D], [C0], C0 names), the
            warm start. Its classes keep their order; new classes follow, sorted by name, with
            rows initialised from their class means (direction of the mean away from the mean of
            all samples, scaled to the current rows' norm).
        replay: (embeddings [M, D], M label names) mixed into the fit so old classes are kept.
        replay_weight: weight of one replay sample relative to one new sample.
        l2: ridge penalty ``l2/2 * ||weight||^2`` on the weights (not the bias), per sample.
        balance: weigh samples so each class counts the same in total: a new word enrolled
            from six clips is not drowned by the replay set's classes, nor the reverse.
        steps: at most this many L-BFGS iterations.
        anchor: pull the current head's rows towards their current values instead of towards
            zero (``l2/2 * ||w - w_init||^2`` for the known classes; new classes still towards
            zero): what the head knew is kept unless the new samples say otherwise, the
            refit's main guard against forgetting beside the replay set.

    Returns:
        (weight float32 [C, D], bias float32 [C], labels tuple of C names).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    names = [str(v) for v in labels]
    if x.ndim != 2 or x.shape[0] != len(names) or x.shape[0] == 0:
        raise ValueError(f"embeddings have shape {x.shape} for {len(names)} labels; expected [N, D] with N >= 1")
    sample_w = np.ones(len(names))
    if replay is not None:
        rx = np.asarray(replay[0], dtype=np.float64)
        rnames = [str(v) for v in replay[1]]
        if rx.ndim != 2 or rx.shape[1] != x.shape[1] or rx.shape[0] != len(rnames):
            raise ValueError(f"replay embeddings have shape {rx.shape} for {len(rnames)} labels; "
                             f"expected [M, {x.shape[1]}]")
        if replay_weight < 0:
            raise ValueError(f"replay_weight is {replay_weight}; expected >= 0")
        x = np.concatenate([x, rx])
        names += rnames
        sample_w = np.concatenate([sample_w, np.full(len(rnames), float(replay_weight))])
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or Inf")
    if l2 < 0 or steps < 1:
        raise ValueError(f"l2={l2}, steps={steps}; expected l2 >= 0 and steps >= 1")
    n, d = x.shape

    old = tuple(str(v) for v in init_labels) if init_labels is not None else ()
    if (init_weight is None) != (init_labels is None):
        raise ValueError("init_weight and init_labels go together: give both or neither")
    out_labels = old + tuple(sorted(set(names) - set(old)))
    if len(out_labels) < 2:
        raise ValueError(f"a head needs at least two labels; the samples have only {out_labels}")
    index = {name: i for i, name in enumerate(out_labels)}
    y = np.array([index[v] for v in names])
    c = len(out_labels)

    w0 = np.zeros((c, d))
    b0 = np.zeros(c)
    if init_weight is not None:
        iw = np.asarray(init_weight, dtype=np.float64)
        ib = np.zeros(len(old)) if init_bias is None else np.asarray(init_bias, dtype=np.float64)
        if iw.shape != (len(old), d) or ib.shape != (len(old),):
            raise ValueError(f"init head has weight {iw.shape}, bias {ib.shape} for {len(old)} labels; "
                             f"expected [{len(old)}, {d}] and [{len(old)}]")
        w0[: len(old)] = iw
        b0[: len(old)] = ib
        _init_new_rows(w0, b0, x, y, len(old))
    prior = np.zeros((c, d))
    if anchor and init_weight is not None:
        prior[: len(old)] = w0[: len(old)]

    if balance:  # every class weighs the same in total, however many samples (or replays) it has
        counts = np.bincount(y, weights=sample_w, minlength=c)
        sample_w = sample_w / counts[y]
    weights = sample_w / sample_w.sum()
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1.0

    # Solved in standardised coordinates z = (x - mu) / scale, where L-BFGS converges several times
    # faster on embeddings far from centred (speech_embedding's spread is about 16 per dimension):
    # logits = z @ v.T + a with w = v / scale and b = a - mu @ w.T, penalty l2/2 ||w - prior||^2 =
    # (l2 / scale^2)/2 ||v - prior * scale||^2. The optimum is the same; only the path is shorter.
    mu = (weights[:, None] * x).sum(axis=0)
    scale = float(np.sqrt((weights[:, None] * (x - mu) ** 2).sum(axis=0).mean())) or 1.0
    z = (x - mu) / scale
    l2_z, prior_z = l2 / scale ** 2, prior * scale

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v = theta[: c * d].reshape(c, d)
        a = theta[c * d:]
        logits = z @ v.T + a  # (N, D) @ (D, C) -> (N, C)
        logits -= logits.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        log_p = logits - log_z
        shift = v - prior_z
        loss = -(weights * (onehot * log_p).sum(axis=1)).sum() + 0.5 * l2_z * (shift * shift).sum()
        resid = (np.exp(log_p) - onehot) * weights[:, None]  # (N, C)
        gv = resid.T @ z + l2_z * shift  # (C, N) @ (N, D) -> (C, D)
        ga = resid.sum(axis=0)
        return float(loss), np.concatenate([gv.ravel(), ga])

    theta0 = np.concatenate([(w0 * scale).ravel(), b0 + w0 @ mu])
    theta, iters, final = _lbfgs(loss_grad, theta0, steps)
    log.debug("fit_head: %d samples, %d classes, %d L-BFGS steps, loss %.5f", n, c, iters, final)
    v = theta[: c * d].reshape(c, d)
    w = v / scale
    b = theta[c * d:] - w @ mu
    return w.astype(np.float32), b.astype(np.float32), out_labels


def _init_new_rows(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, n_old: int) -> None:
    """Rows n_old.. of ``w``/``b`` from class means, in place (see :func:`fit_head`)."""
    if n_old == w.shape[0]:
        return
    centre = x.mean(axis=0)
    norms = np.linalg.norm(w[:n_old], axis=1)
    scale = float(norms.mean()) if n_old and norms.mean() > 0 else 1.0
    base_bias = float(b[:n_old].mean()) if n_old else 0.0
    for k in range(n_old, w.shape[0]):
        direction = x[y == k].mean(axis=0) - centre
        length = np.linalg.norm(direction)
        if length > 0:
            w[k] = direction * (scale / length)
        b[k] = base_bias - float(w[k] @ centre)


def _lbfgs(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, max_iter: int,
           gtol: float = 1e-7, ftol: float = 1e-10) -> tuple[np.ndarray, int, float]:
    """Minimise a smooth convex ``fun`` (returning value and gradient) by L-BFGS with Armijo backtracking."""
    x = x0.copy()
    f, g = fun(x)
    history: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=_LBFGS_MEMORY)
    it = 0
    for it in range(1, max_iter + 1):
        if np.abs(g).max() < gtol:
            break
        q = g.copy()
        alphas = []
        for s, yv, rho in reversed(history):
            a = rho * (s @ q)
            q -= a * yv
            alphas.append(a)
        if history:
            s, yv, _ = history[-1]
            q *= (s @ yv) / (yv @ yv)
        else:
            q /= max(1.0, float(np.linalg.norm(g)))
        for (s, yv, rho), a in zip(history, reversed(alphas)):
            q += s * (a - rho * (yv @ q))
        direction = -q
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            history.clear()
            direction, slope = -g, -float(g @ g)
        t = 1.0
        while True:
            x_new = x + t * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * t * slope:
                break
            t *= 0.5
            if t < 1e-12:
                return x, it, f
        s, yv = x_new - x, g_new - g
        sy = float(s @ yv)
        if sy > 1e-12:
            history.append((s, yv, 1.0 / sy))
        done = abs(f - f_new) <= ftol * max(1.0, abs(f))
        x, f, g = x_new, f_new, g_new
        if done:
            break
    return x, it, f
