"""The Python side of `stackhive bench stack` (issue 12): the same models with the same
hyperparameters on the same matrix and folds, run the way a Python stacking pipeline would
(scikit-learn, lightgbm, xgboost, catboost, PyTorch, pytorch-tabnet), timed per model, with
the out-of-fold AUC of each. The Rust side writes the matrix as raw files and the job list as
JSON; this prints one JSON line per job.

argv: WORK_DIR THREADS PROCS JOBS_JSON
  WORK_DIR/meta.json   {"cols": C, "categorical": [column indices], "levels": [...], "k": K}
  WORK_DIR/x_train.f32, y_train.u8, folds.u16, x_test.f32
  JOBS_JSON            [{"model": "...", "params": {...}, "seed": S}, ...]
PROCS > 1 runs the jobs in a pool of that many processes (THREADS threads each), the way a
Python sweep would fill the cores.
"""
import json
import os
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

WORK, THREADS, PROCS, JOBS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
meta = json.load(open(os.path.join(WORK, "meta.json")))
C = meta["cols"]
CAT = meta["categorical"]
LEVELS = meta["levels"]
K = meta["k"]
X = np.fromfile(os.path.join(WORK, "x_train.f32"), dtype="<f4").reshape(-1, C)
Y = np.fromfile(os.path.join(WORK, "y_train.u8"), dtype=np.uint8)
FOLDS = np.fromfile(os.path.join(WORK, "folds.u16"), dtype="<u2")
XT = np.fromfile(os.path.join(WORK, "x_test.f32"), dtype="<f4").reshape(-1, C)
NUM = [c for c in range(C) if c not in CAT]


def dense(xtr, xva, xte):
    """Standardised numeric columns (by the fold's training rows), one-hot categoricals."""
    mean = np.nanmean(xtr[:, NUM], axis=0)
    sd = np.nanstd(xtr[:, NUM], axis=0)
    sd[sd < 1e-12] = 1.0

    def enc(x):
        num = (x[:, NUM] - mean) / sd
        num[~np.isfinite(num)] = 0.0
        parts = [num]
        for c, levels in zip(CAT, LEVELS):
            oh = np.zeros((len(x), levels), dtype=np.float32)
            ok = np.isfinite(x[:, c])
            oh[np.where(ok)[0], x[ok, c].astype(int)] = 1.0
            parts.append(oh)
        return np.hstack(parts).astype(np.float32)

    return enc(xtr), enc(xva), enc(xte)


def fit_lightgbm(p, s, xtr, ytr, xva, xte, kind):
    import lightgbm as lgb

    common = dict(objective="binary", verbosity=-1, num_threads=THREADS, seed=s, deterministic=True, force_row_wise=True)
    if kind == "lightgbm":
        params = dict(common, boosting="gbdt", learning_rate=p["learning_rate"], num_leaves=p["num_leaves"],
                      min_data_in_leaf=p["min_data_in_leaf"], feature_fraction=p["feature_fraction"],
                      bagging_fraction=p["bagging_fraction"], bagging_freq=int(p["bagging_fraction"] < 1.0),
                      lambda_l2=p["lambda_l2"])
        rounds = p["num_iterations"]
    else:
        params = dict(common, boosting="rf", num_leaves=p["num_leaves"], min_data_in_leaf=p["min_data_in_leaf"],
                      feature_fraction=p["feature_fraction"], bagging_fraction=p["bagging_fraction"], bagging_freq=1,
                      extra_trees=(kind == "extra-trees"))
        rounds = p["num_trees"]
    b = lgb.train(params, lgb.Dataset(xtr, ytr, params={"max_bin": 255, "verbosity": -1}), num_boost_round=rounds)
    return b.predict(xva), b.predict(xte)


def fit_sklearn_forest(p, s, xtr, ytr, xva, xte, kind):
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    cls = ExtraTreesClassifier if kind == "extra-trees" else RandomForestClassifier
    m = cls(n_estimators=p["num_trees"], max_leaf_nodes=p["num_leaves"], min_samples_leaf=p["min_data_in_leaf"],
            max_features=p["feature_fraction"], bootstrap=True, max_samples=p["bagging_fraction"], n_jobs=THREADS,
            random_state=s % (2**31))
    xtr, xva, xte = (np.nan_to_num(a, nan=-999.0) for a in (xtr, xva, xte))
    m.fit(xtr, ytr)
    return m.predict_proba(xva)[:, 1], m.predict_proba(xte)[:, 1]


def fit_xgboost(p, s, xtr, ytr, xva, xte, kind):
    import xgboost as xgb

    params = dict(objective="binary:logistic", tree_method="hist", nthread=THREADS, seed=s % (2**31), verbosity=0)
    if kind == "xgboost":
        params.update(eta=p["eta"], max_depth=p["max_depth"], min_child_weight=p["min_child_weight"],
                      subsample=p["subsample"], colsample_bytree=p["colsample_bytree"], reg_lambda=p["lambda"])
        rounds = p["num_boost_round"]
    else:
        params.update(eta=1.0, num_parallel_tree=p["num_parallel_tree"], max_depth=p["max_depth"],
                      subsample=p["subsample"], colsample_bynode=p["colsample_bynode"],
                      min_child_weight=p["min_child_weight"])
        rounds = 1
    b = xgb.train(params, xgb.DMatrix(xtr, label=ytr), num_boost_round=rounds)
    return b.predict(xgb.DMatrix(xva)), b.predict(xgb.DMatrix(xte))


def fit_catboost(p, s, xtr, ytr, xva, xte, kind):
    import pandas as pd
    from catboost import CatBoostClassifier, Pool

    def frame(x, y=None):
        df = pd.DataFrame(x)
        for c in CAT:
            df[c] = np.where(np.isfinite(x[:, c]), x[:, c], -1).astype(np.int64)
        return Pool(df, label=y, cat_features=CAT or None)

    m = CatBoostClassifier(iterations=p["iterations"], learning_rate=p["learning_rate"], depth=p["depth"],
                           l2_leaf_reg=p["l2_leaf_reg"], thread_count=THREADS, random_seed=s % (2**31), verbose=False,
                           allow_writing_files=False)
    m.fit(frame(xtr, ytr))
    return m.predict_proba(frame(xva))[:, 1], m.predict_proba(frame(xte))[:, 1]


def fit_knn(p, s, xtr, ytr, xva, xte, kind):
    from sklearn.neighbors import KNeighborsClassifier

    xtr, xva, xte = dense(xtr, xva, xte)
    m = KNeighborsClassifier(n_neighbors=p["k"], weights=p["weights"], n_jobs=THREADS).fit(xtr, ytr)
    return m.predict_proba(xva)[:, 1], m.predict_proba(xte)[:, 1]


def fit_logreg(p, s, xtr, ytr, xva, xte, kind):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    xtr, xva, xte = dense(xtr, xva, xte)
    m = LogisticRegressionCV(Cs=p["cs"], cv=StratifiedKFold(p["inner_folds"]), scoring="neg_log_loss",
                             max_iter=200, n_jobs=THREADS).fit(xtr, ytr)
    return m.predict_proba(xva)[:, 1], m.predict_proba(xte)[:, 1]


def torch_fit(net, xtr, ytr, preds, p, s, extra=None):
    import torch

    torch.manual_seed(s)
    opt = torch.optim.Adam(net.parameters(), lr=p["lr"], weight_decay=p.get("weight_decay", 0.0))
    xtr_t = [torch.from_numpy(a) for a in xtr]
    y = torch.from_numpy(ytr.astype(np.float32))
    n = len(y)
    rng = np.random.default_rng(s)
    for _ in range(p["epochs"]):
        net.train()
        order = rng.permutation(n)
        for i in range(0, n, p["batch"]):
            idx = torch.from_numpy(order[i:i + p["batch"]])
            if len(idx) < 2:
                continue
            out = net(*[a[idx] for a in xtr_t])
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            if aux is not None:
                loss = loss + aux
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    res = []
    with torch.no_grad():
        for xs in preds:
            out = net(*[torch.from_numpy(a) for a in xs])
            logits = out[0] if isinstance(out, tuple) else out
            res.append(torch.sigmoid(logits).numpy())
    return res


def mlp_layers(inp, p):
    import torch.nn as nn

    layers, w = [], inp
    for _ in range(p["layers"]):
        layers += [nn.Linear(w, p["width"]), nn.ReLU(), nn.Dropout(p["dropout"])]
        w = p["width"]
    layers.append(nn.Linear(w, 1))
    return nn.Sequential(*layers)


def fit_mlp(p, s, xtr, ytr, xva, xte, kind):
    import torch

    torch.set_num_threads(THREADS)
    xtr, xva, xte = dense(xtr, xva, xte)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = mlp_layers(xtr.shape[1], p)

        def forward(self, x):
            return self.m(x).squeeze(1)

    torch.manual_seed(s)
    va, te = torch_fit(Net(), [xtr], ytr, [[xva], [xte]], p, s)
    return va, te


def fit_embedding(p, s, xtr, ytr, xva, xte, kind):
    import torch

    torch.set_num_threads(THREADS)
    mean = np.nanmean(xtr[:, NUM], axis=0)
    sd = np.nanstd(xtr[:, NUM], axis=0)
    sd[sd < 1e-12] = 1.0

    def split(x):
        num = (x[:, NUM] - mean) / sd
        num[~np.isfinite(num)] = 0.0
        codes = np.stack([np.where(np.isfinite(x[:, c]), x[:, c], l).astype(np.int64) for c, l in zip(CAT, LEVELS)], 1) if CAT else np.zeros((len(x), 0), np.int64)
        return num.astype(np.float32), codes

    dim = p["embedding_dim"]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.ModuleList([torch.nn.Embedding(l + 1, dim) for l in LEVELS])
            self.m = mlp_layers(len(NUM) + dim * len(LEVELS), p)

        def forward(self, num, codes):
            parts = [num] + [e(codes[:, i]) for i, e in enumerate(self.emb)]
            return self.m(torch.cat(parts, 1)).squeeze(1)

    torch.manual_seed(s)
    return torch_fit(Net(), list(split(xtr)), ytr, [list(split(xva)), list(split(xte))], p, s)


def fit_tabnet(p, s, xtr, ytr, xva, xte, kind):
    import torch
    from pytorch_tabnet.tab_model import TabNetClassifier

    torch.set_num_threads(THREADS)
    xtr, xva, xte = dense(xtr, xva, xte)
    m = TabNetClassifier(n_d=p["n_d"], n_a=p["n_d"], n_steps=p["n_steps"], gamma=p["gamma"],
                         lambda_sparse=p["lambda_sparse"], optimizer_params=dict(lr=p["lr"]), seed=s % (2**31),
                         verbose=0, device_name="cpu")
    m.fit(xtr, ytr, max_epochs=p["epochs"], batch_size=p["batch"], virtual_batch_size=128, patience=0, drop_last=False)
    return m.predict_proba(xva)[:, 1], m.predict_proba(xte)[:, 1]


FIT = {
    "lightgbm": fit_lightgbm, "random-forest": fit_sklearn_forest, "extra-trees": fit_sklearn_forest,
    "xgboost": fit_xgboost, "xgboost-rf": fit_xgboost, "catboost": fit_catboost, "knn": fit_knn,
    "logreg": fit_logreg, "mlp": fit_mlp, "entity-embedding": fit_embedding, "tabnet": fit_tabnet,
}


def run_job(indexed):
    index, job = indexed
    kind, p, seed = job["model"], job["params"], job["seed"]
    start = time.perf_counter()
    oof = np.zeros(len(Y), dtype=np.float64)
    for f in range(K):
        tr, va = FOLDS != f, FOLDS == f
        s = (seed * 1_000_003 + f) % (2**31)
        pv, _ = FIT[kind](p, s, X[tr], Y[tr], X[va], XT, kind)
        oof[va] = pv
    seconds = time.perf_counter() - start
    return {"index": index, "model": kind, "seconds": seconds, "oof_auc": roc_auc_score(Y, oof)}


if __name__ == "__main__":
    jobs = list(enumerate(json.load(open(JOBS))))
    if PROCS > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(PROCS) as pool:
            for r in pool.imap_unordered(run_job, jobs):
                print(json.dumps(r), flush=True)
    else:
        for job in jobs:
            print(json.dumps(run_job(job)), flush=True)
