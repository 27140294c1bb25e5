"""AutoML's final selection against the search's own pick, on small tables.

  .venv/bin/python bench/automl_selection_ab.py --datasets=iris,wine,breast_cancer --seeds=5 \
      --out=/tmp/automl_selection_ab.jsonl

For each dataset and seed, the same search (Hyperband, one iteration, budgets 1..9, rf and
gbm) is finalised two ways: "old", the search's pick (validation-selected, trained on the
training split: `small_rows=0, ensemble=False, refit=False`), and "new", the default final
selection (out-of-fold re-scoring over holdouts of train+validation, a greedy ensemble when it
scores better, refit on train+validation). One JSON line per fit: test accuracy, the selection
score, ensemble members, separation warnings, wall seconds.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

from metajax.automl import AutoML


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--datasets", default="iris,wine,breast_cancer")
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--out", default="/tmp/automl_selection_ab.jsonl")
  args = ap.parse_args()
  warnings.simplefilter("ignore")
  with open(args.out, "w") as f:
    for name in args.datasets.split(","):
      for seed in range(args.seeds):
        for mode in ("old", "new"):
          kw = dict(time_budget_s=0, scheduler="hyperband", hyperband_iterations=1,
                    max_budget=9.0, families=("rf", "gbm"), seed=seed, progress=False)
          if mode == "old":
            kw.update(small_rows=0, ensemble=False, refit=False)
          t = time.perf_counter()
          m = AutoML(**kw).fit(name)
          row = dict(data=name, seed=seed, mode=mode, test=m.best_["test"]["accuracy"],
                     val=m.best_["val_score"], members=len(m.best_["members"]),
                     warn=len(m.selection_["warnings"]), s=time.perf_counter() - t)
          print(json.dumps(row), flush=True)
          f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
