"""AutoML: Hyperband over MLP, random forest and gradient boosting (issue 3).

  python -m launch.main --config=configs/automl.py --workdir=/tmp/automl \
      [--config.dataset=wine] [--config.scheduler=asha --config.max_trials=40]

On breast_cancer (scikit-learn ships it, so it runs offline) the search should
reach about 0.97-0.99 validation accuracy and 0.95-0.98 test accuracy in a few
minutes on a 2-core CPU; the workdir gets report.md, a self-contained
report.html, metrics.jsonl and the resumable search state. Rerunning the same
command resumes without redoing finished rungs. `mode='tiny'`: iris, six
trials, seconds.
"""

from metajax.automl.config import default_config, tiny


def get_config(mode: str = ""):
  c = default_config()
  return tiny(c) if mode == "tiny" else c
