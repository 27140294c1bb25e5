"""AutoML in JAX: successive halving, Hyperband and ASHA over model families.

`AutoML(time_budget_s=60, metric='accuracy').fit(X, y)` (or `.fit('wine')`),
then `.leaderboard`, `.best_`, `.predict(X)`, `.save(path)` / `AutoML.load(path)`.
The experiment entry point is `metajax.automl.experiment:run(config, workdir)`.
"""

from metajax.automl.api import AutoML
from metajax.automl.data import DataError, Dataset
from metajax.automl.store import ExperienceStore

__all__ = ["AutoML", "DataError", "Dataset", "ExperienceStore"]
