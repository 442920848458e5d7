"""IF and RIF against exact leave-one-out refits of L2 logistic regression -> benchmarks/results/influence_loo.md.

Synthetic binary logistic data (weights N(0, 9/d), labels drawn from the model), sum-form objective
Σ_i ℓ_i + (λ/2)‖θ‖² with λ = 1 (intercept penalized), fitted by Newton in float64 to ‖∇‖ < 1e-10; 200 test rows.
Truth: every row removed and the model refit by Newton from θ̂ to ‖∇‖ < 1e-10. Two truths are reported:
the change of the mean test loss itself, and its first-order part ∇L_testᵀ(θ̂_{−i} − θ̂) (what a one-step
parameter estimate can predict; the rest is the test loss's curvature along the parameter change).
slope = the least-squares slope of truth on prediction (1 = calibrated; > 1 = the prediction is too small).

Run:  .venv/bin/python benchmarks/influence_loo.py
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr

from dataworth.influence import InfluenceFunction, RescaledInfluence
from publish import publish

LAMBDA = 1.0
CASES = ((400, 200), (2000, 50))


def problem(n: int, d: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d) * 3 / np.sqrt(d)
    X, Xt = rng.normal(size=(n, d)), rng.normal(size=(200, d))
    return X, (rng.random(n) < 1 / (1 + np.exp(-X @ w))).astype(int), Xt, (rng.random(200) < 1 / (1 + np.exp(-Xt @ w))).astype(int)


def newton(design: np.ndarray, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    for _ in range(50):
        p = 1 / (1 + np.exp(-design @ theta))
        gradient = design.T @ (p - y) + LAMBDA * theta
        if np.linalg.norm(gradient) < 1e-10:
            break
        theta = theta - np.linalg.solve((design * (p * (1 - p))[:, None]).T @ design + LAMBDA * np.eye(len(theta)), gradient)
    return theta


def mean_loss(design: np.ndarray, y: np.ndarray, theta: np.ndarray) -> float:
    z = design @ theta
    return float(np.mean(np.logaddexp(0, z) - y * z))


def main() -> None:
    lines = ["# Influence (IF) and rescaled influence (RIF) against exact leave-one-out refits", "",
             "Reproduce: `.venv/bin/python benchmarks/influence_loo.py`.", __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| n | d | method | truth | Pearson | Spearman | slope |", "|---|---|---|---|---|---|---|"]
    for n, d in CASES:
        X, y, Xt, yt = problem(n, d, seed=n)
        design, test = np.hstack([X, np.ones((n, 1))]), np.hstack([Xt, np.ones((len(Xt), 1))])
        theta = newton(design, y, np.zeros(d + 1))
        pt = 1 / (1 + np.exp(-test @ theta))
        gradient_test = test.T @ (pt - yt) / len(yt)
        base = mean_loss(test, yt, theta)
        refits = [newton(design[np.arange(n) != i], y[np.arange(n) != i], theta) for i in range(n)]
        truths = {"test loss change": np.array([mean_loss(test, yt, t) - base for t in refits]),
                  "first-order change": np.array([gradient_test @ (t - theta) for t in refits])}
        for method in (InfluenceFunction, RescaledInfluence):
            predicted = method("logistic", l2=LAMBDA, solver="explicit", damping=0.0).fit(X, y).attribute(Xt, yt).reduce().values
            for truth_name, truth in truths.items():
                slope = np.polyfit(predicted, truth, 1)[0]
                lines.append(f"| {n} | {d} | {method.method} | {truth_name} | {pearsonr(predicted, truth)[0]:.3f} | "
                             f"{spearmanr(predicted, truth)[0]:.3f} | {slope:.2f} |")
    publish("influence_loo.md", lines)


if __name__ == "__main__":
    main()
