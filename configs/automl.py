"""AutoML: Hyperband over MLP, random forest and gradient boosting (issue 3).

  python -m launch.main --config=configs/automl.py --workdir=/tmp/automl \
      [--config.dataset=wine] [--config.scheduler=asha --config.max_trials=40]

On breast_cancer (scikit-learn ships it, so it runs offline) it should reach
about 0.98 validation and 0.95-0.97 test accuracy in under a minute on a
2-core CPU (measured 2026-11-22 on a shared 2-core machine: 49 Hyperband
trials, 9 compiled population programs, val 0.9825, test 0.9561, 30 s wall).
The workdir gets report.md, a self-contained report.html, metrics.jsonl and
the resumable search state. Rerunning the same
command resumes without redoing finished rungs. `mode='tiny'`: iris, six
trials, seconds.
"""

from metajax.automl.config import default_config, tiny


def get_config(mode: str = ""):
  c = default_config()
  return tiny(c) if mode == "tiny" else c
