"""AutoGluon-Tabular on one prepared split, run in its own venv (it pins its own libraries).

  .venv-ag/bin/python bench/autogluon_peer.py --data=split.npz --time_limit=60 --seed=0

Set-up (once): `python -m venv .venv-ag && .venv-ag/bin/pip install
"autogluon.tabular[lightgbm,catboost,xgboost]"` (no torch: its NN_TORCH and FASTAI models are
skipped by `medium_quality`, which trains the rest). `bench/automl_vs_peers.py` writes
split.npz (xtr, ytr, xva, yva, xte: the same flat features every peer gets) and reads the
one JSON line this prints: test predictions, validation accuracy of the best model, the
fit's wall seconds (import and start-up excluded and reported apart), models trained.
"""

import argparse
import json
import tempfile
import time

t_start = time.perf_counter()
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from autogluon.tabular import TabularPredictor  # noqa: E402


def frame(x, y=None):
  df = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
  if y is not None:
    df["label"] = y
  return df


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--data", required=True)
  ap.add_argument("--time_limit", type=float, required=True)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--presets", default="medium_quality")
  args = ap.parse_args()
  z = np.load(args.data)
  start_s = time.perf_counter() - t_start
  with tempfile.TemporaryDirectory() as path:
    t0 = time.perf_counter()
    pred = TabularPredictor(label="label", eval_metric="accuracy", path=path, verbosity=0)
    pred.fit(frame(z["xtr"], z["ytr"]), tuning_data=frame(z["xva"], z["yva"]),
             time_limit=args.time_limit, presets=args.presets,
             ag_args_fit={"random_seed": args.seed})
    fit_s = time.perf_counter() - t0
    test_pred = pred.predict(frame(z["xte"])).to_numpy()
    board = pred.leaderboard(silent=True)
    val = float(board["score_val"].max())
    best = str(pred.model_best)
    models = len(board)
    wall = time.perf_counter() - t0
  print(json.dumps(dict(test_pred=test_pred.astype(int).tolist(), val=val, wall=wall, fit_s=fit_s,
                        start_s=start_s, best=best, trials=models)))


if __name__ == "__main__":
  main()
