"""CatBoost for stackhive's stacker (issue 12): no Rust library trains CatBoost, so the stacker
runs this with the real `catboost` package. It reads one fold's rows from files the stacker
wrote, fits a CatBoostClassifier and writes the fold's predictions; the stacker does the rest
(fold loop, checks, scores).

argv: WORK_DIR, where the stacker wrote
  job.json    {"params": {...}, "threads": N, "seed": S, "cat_features": [column indices]}
  train.f32   training rows, row-major float32, with train.labels (uint8)
  valid.f32   validation rows; test.f32 test rows
and where this writes valid.pred and test.pred (float32 probabilities of class 1).
"""
import json
import os
import sys

import numpy as np
from catboost import CatBoostClassifier, Pool


def rows(path, cols):
    data = np.fromfile(path, dtype="<f4")
    return data.reshape(-1, cols)


def frame(x, cat):
    # CatBoost wants categorical columns as integers or strings, never NaN: missing is -1.
    if not cat:
        return x
    import pandas as pd

    df = pd.DataFrame(x)
    for c in cat:
        df[c] = np.where(np.isfinite(x[:, c]), x[:, c], -1).astype(np.int64)
    return df


def main():
    work = sys.argv[1]
    with open(os.path.join(work, "job.json")) as f:
        job = json.load(f)
    cols = job["cols"]
    cat = job["cat_features"]
    x_train = rows(os.path.join(work, "train.f32"), cols)
    y_train = np.fromfile(os.path.join(work, "train.labels"), dtype=np.uint8)
    model = CatBoostClassifier(
        **job["params"],
        thread_count=job["threads"],
        random_seed=job["seed"],
        verbose=False,
        allow_writing_files=False,
    )
    model.fit(Pool(frame(x_train, cat), y_train, cat_features=cat or None))
    for side in ("valid", "test"):
        x = rows(os.path.join(work, side + ".f32"), cols)
        if len(x) == 0:
            p = np.zeros(0, dtype="<f4")
        else:
            p = model.predict_proba(Pool(frame(x, cat), cat_features=cat or None))[:, 1]
        p.astype("<f4").tofile(os.path.join(work, side + ".pred"))


if __name__ == "__main__":
    main()
