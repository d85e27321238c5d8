#!/usr/bin/env python3
"""Cross-check of puppetlens's logistic probes against scikit-learn, on the same exported data.

Run (from the repository root):

    pip install scikit-learn safetensors numpy
    cargo test --release --test offline probe::crosscheck_data_and_ours   # writes target/probe-crosscheck/
    python3 scripts/sklearn_crosscheck.py

The Rust test writes `data.safetensors` (keys `layer.{l}.x_train|x_val|x_test` as [n, d] f32 and
`y_train|y_val|y_test` as u8), `ours.json` (puppetlens's per-layer sweep: chosen l2, metrics) and
`ours.safetensors` (our raw-space weights `layer.{l}.weight` and biases `layer.{l}.bias`).

For every layer this script fits `StandardScaler` on the training split and
`LogisticRegression(C=1 / (l2 * n_train))` with OUR chosen l2 (puppetlens minimises the mean loss
+ (l2/2)||w||^2; scikit-learn minimises C * sum of losses + ||w||^2 / 2, which is C * n_train times
that objective, so both have the same minimiser), once converged tightly (tol 1e-10) and once with scikit-learn's defaults, and
prints a table. It exits non-zero if any layer's test accuracy differs from ours (tightly converged
scikit-learn) by more than 1 point (0.01). It also reports the cosine between the two weight
vectors and both objective values (ours must not be worse than scikit-learn's beyond rounding).

Ridge mode, run by `cargo test --release --test offline probe::ridge_crosscheck_data_and_ours`:

    python3 scripts/sklearn_crosscheck.py --ridge target/ridge-crosscheck

reads `data.safetensors` (`layer.{l}.x_train|x_val|x_test` [n, d] f32, `t_train|t_val|t_test` f64),
`ours.json` (puppetlens's `probe::regress`: chosen l2 and R^2 per layer) and `ours.safetensors`
(our raw-space ridge weights and biases, and linfa-linear's LinearRegression predictions on the
test split, `layer.{l}.linfa_ols_test`). Per layer it fits StandardScaler + `Ridge(alpha = l2 *
n_train)` at OUR chosen l2 (puppetlens minimises (1/2n)||t - Xw - b||^2 + (l2/2)||w||^2) and the
least-squares solution with `numpy.linalg.lstsq` on [X, 1]. It exits non-zero if our test
predictions differ from scikit-learn's by more than 1e-3 target standard deviations, our test R^2
from scikit-learn's by more than 1e-4, or linfa-linear's least-squares predictions from lstsq's by
more than 1e-2 target standard deviations (linfa-linear solves in f32 here).

Timing mode, used by `cargo bench --bench probes`:

    python3 scripts/sklearn_crosscheck.py --time DATA.safetensors --l2 1e-4,1e-3,1e-2,1e-1,1 --tol 1e-6

fits every layer at every l2 (StandardScaler, then LogisticRegression), chooses l2 on validation
accuracy as puppetlens does, and prints one JSON line with the seconds taken, for scikit-learn's
default settings and for settings matched to puppetlens's tolerance.
"""

import argparse
import json
import sys
import time
import warnings

import numpy as np
from safetensors.numpy import load_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def layers_of(data):
    return sorted({int(k.split(".")[1]) for k in data if k.startswith("layer.")})


def objective(xs, y, w, b, l2):
    """Mean logistic loss + (l2/2)||w||^2 in standardized coordinates (float64)."""
    z = xs @ w + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * (w @ w))


def fit(xs, y, l2, tol, max_iter):
    c = 1.0 / (l2 * len(y))
    clf = LogisticRegression(C=c, tol=tol, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(xs, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf, converged


def crosscheck(folder):
    data = load_file(f"{folder}/data.safetensors")
    ours = json.load(open(f"{folder}/ours.json"))
    weights = load_file(f"{folder}/ours.safetensors")
    y_tr = data["y_train"].astype(np.float64)
    y_te = data["y_test"].astype(bool)
    n = len(y_tr)
    assert n == ours["n_train"], (n, ours["n_train"])
    rows, worst = [], 0.0
    header = (
        "| layer | l2 | C | ours test acc | sklearn test acc (tol 1e-10) | |diff| | "
        "sklearn default test acc | 1 - cos(w_ours, w_sk) | objective ours - sklearn | sklearn n_iter |"
    )
    print(header)
    print("|" + "---:|" * 10)
    for rep in ours["layers"]:
        l, l2 = rep["layer"], rep["l2"]
        x_tr = data[f"layer.{l}.x_train"].astype(np.float64)
        x_te = data[f"layer.{l}.x_test"].astype(np.float64)
        sc = StandardScaler().fit(x_tr)
        xs_tr, xs_te = sc.transform(x_tr), sc.transform(x_te)
        tight, ok = fit(xs_tr, y_tr, l2, 1e-10, 100_000)
        default, _ = fit(xs_tr, y_tr, l2, 1e-4, 100)
        acc_sk = float(np.mean(tight.predict(xs_te) == y_te))
        acc_def = float(np.mean(default.predict(xs_te) == y_te))
        acc_ours = rep["test"]["accuracy"]
        # Our probe, recomputed here in numpy from the exported raw-space weights.
        w_raw = weights[f"layer.{l}.weight"].astype(np.float64)
        b_raw = float(weights[f"layer.{l}.bias"][0])
        acc_ours_np = float(np.mean(((x_te @ w_raw + b_raw) > 0) == y_te))
        assert abs(acc_ours_np - acc_ours) <= 1.0 / len(y_te) + 1e-12, (l, acc_ours_np, acc_ours)
        # Compare in standardized coordinates: w_std = w_raw * scale, b_std = b_raw + w_raw . mean.
        w_std = w_raw * sc.scale_
        b_std = b_raw + float(w_raw @ sc.mean_)
        w_sk = tight.coef_[0]
        cos = float(w_std @ w_sk / (np.linalg.norm(w_std) * np.linalg.norm(w_sk)))
        gap = objective(xs_tr, y_tr, w_std, b_std, l2) - objective(
            xs_tr, y_tr, w_sk, float(tight.intercept_[0]), l2
        )
        diff = abs(acc_ours - acc_sk)
        worst = max(worst, diff)
        conv = "" if ok else " (not converged)"
        print(
            f"| {l} | {l2:.0e} | {1.0 / (l2 * n):.4g} | {acc_ours:.3f} | {acc_sk:.3f} | {diff:.3f} | "
            f"{acc_def:.3f} | {1.0 - cos:.1e} | {gap:+.2e} | {int(tight.n_iter_[0])}{conv} |"
        )
        rows.append(diff)
    print(f"\nlargest |ours - sklearn| test accuracy difference: {worst:.3f} (limit 0.010)")
    if worst > 0.01 + 1e-12:
        print("DISAGREEMENT: puppetlens and scikit-learn differ by more than 1 point", file=sys.stderr)
        return 1
    print("agreement within 1 point on every layer")
    return 0


def r2_score(t, p):
    return float(1.0 - np.sum((t - p) ** 2) / np.sum((t - np.mean(t)) ** 2))


def ridge_crosscheck(folder):
    from sklearn.linear_model import Ridge

    data = load_file(f"{folder}/data.safetensors")
    ours = json.load(open(f"{folder}/ours.json"))
    weights = load_file(f"{folder}/ours.safetensors")
    t_tr, t_te = data["t_train"].astype(np.float64), data["t_test"].astype(np.float64)
    n = len(t_tr)
    sd = float(np.std(t_te))
    print("| layer | l2 | alpha | ours test R2 | sklearn Ridge test R2 | max |pred diff| / sd(t) | "
          "linfa OLS vs lstsq max |diff| / sd(t) | lstsq test R2 |")
    print("|" + "---:|" * 8)
    bad = []
    for rep in ours["layers"]:
        l, l2 = rep["layer"], rep["l2"]
        x_tr = data[f"layer.{l}.x_train"].astype(np.float64)
        x_te = data[f"layer.{l}.x_test"].astype(np.float64)
        sc = StandardScaler().fit(x_tr)
        if l2 > 0:
            sk = Ridge(alpha=l2 * n).fit(sc.transform(x_tr), t_tr)
            p_sk = sk.predict(sc.transform(x_te))
        else:
            a = np.hstack([sc.transform(x_tr), np.ones((n, 1))])
            coef = np.linalg.lstsq(a, t_tr, rcond=None)[0]
            p_sk = np.hstack([sc.transform(x_te), np.ones((len(x_te), 1))]) @ coef
        w = weights[f"layer.{l}.weight"].astype(np.float64)
        b = float(weights[f"layer.{l}.bias"][0])
        p_ours = x_te @ w + b
        r2_ours = rep["test"]["r2"]
        r2_np = r2_score(t_te, p_ours)
        assert abs(r2_np - r2_ours) < 1e-5, (l, r2_np, r2_ours)
        r2_sk = r2_score(t_te, p_sk)
        d_pred = float(np.max(np.abs(p_ours - p_sk))) / sd
        a_raw = np.hstack([x_tr, np.ones((n, 1))])
        coef_ls = np.linalg.lstsq(a_raw, t_tr, rcond=None)[0]
        p_ls = np.hstack([x_te, np.ones((len(x_te), 1))]) @ coef_ls
        p_linfa = weights[f"layer.{l}.linfa_ols_test"].astype(np.float64)
        d_ols = float(np.max(np.abs(p_linfa - p_ls))) / sd
        print(f"| {l} | {l2:.0e} | {l2 * n:.3g} | {r2_ours:.5f} | {r2_sk:.5f} | {d_pred:.1e} | "
              f"{d_ols:.1e} | {r2_score(t_te, p_ls):.5f} |")
        if d_pred > 1e-3 or abs(r2_ours - r2_sk) > 1e-4:
            bad.append(f"layer {l}: ridge differs from scikit-learn ({d_pred:.1e} sd, R2 {r2_ours} vs {r2_sk})")
        if d_ols > 1e-2:
            bad.append(f"layer {l}: linfa-linear least squares differs from lstsq ({d_ols:.1e} sd)")
    if bad:
        print("DISAGREEMENT: " + "; ".join(bad), file=sys.stderr)
        return 1
    print("\nridge agrees with scikit-learn and linfa-linear's least squares with numpy.linalg.lstsq")
    return 0


def timing(path, grid, tol):
    data = load_file(path)
    y_tr, y_va = data["y_train"], data["y_val"].astype(bool)
    layers = layers_of(data)
    out = {"layers": len(layers), "n_train": int(len(y_tr)), "grid": grid}
    for name, (t, it) in {"default": (1e-4, 100), "matched": (tol, 100_000)}.items():
        not_converged = 0
        start = time.perf_counter()
        for l in layers:
            sc = StandardScaler().fit(data[f"layer.{l}.x_train"])
            xs_tr = sc.transform(data[f"layer.{l}.x_train"])
            xs_va = sc.transform(data[f"layer.{l}.x_val"])
            best = None
            for l2 in sorted(grid, reverse=True):
                clf, ok = fit(xs_tr, y_tr, l2, t, it)
                not_converged += not ok
                acc = float(np.mean(clf.predict(xs_va) == y_va))
                if best is None or acc > best:
                    best = acc
        out[f"{name}_seconds"] = time.perf_counter() - start
        out[f"{name}_not_converged"] = not_converged
    print(json.dumps(out))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", default="target/probe-crosscheck")
    ap.add_argument("--time", metavar="DATA", help="time scikit-learn on DATA.safetensors")
    ap.add_argument("--ridge", metavar="FOLDER", help="cross-check the ridge probes in FOLDER")
    ap.add_argument("--l2", default="1e-4,1e-3,1e-2,1e-1,1", help="l2 grid for --time")
    ap.add_argument("--tol", type=float, default=1e-6, help="matched tolerance for --time")
    args = ap.parse_args()
    if args.ridge:
        return ridge_crosscheck(args.ridge)
    if args.time:
        return timing(args.time, [float(v) for v in args.l2.split(",")], args.tol)
    return crosscheck(args.folder)


if __name__ == "__main__":
    sys.exit(main())
