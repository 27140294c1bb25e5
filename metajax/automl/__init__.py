"""AutoML in JAX: successive halving, Hyperband and ASHA over model families.

`AutoML(time_budget_s=60, metric='accuracy').fit(X, y)` (or `.fit('wine')`),
then `.leaderboard`, `.best_`, `.predict(X)`, `.evaluate(X, y)`, `.save(path)` /
`AutoML.load(path)`. Neural families are `metajax.models` networks trained as vmapped
populations (`population`); the experiment driver is `metajax.experiments.automl`.
With `store_path=`, every search first reuses the best configurations of the nearest
past datasets in the experience store (`warmstart`, `metafeatures`, `store`) and records
its own trials there; `warm_start=False` searches cold.
"""

from metajax.automl.api import AutoML
from metajax.automl.store import ExperienceStore
from metajax.data.tabular import DataError, Dataset

__all__ = ["AutoML", "DataError", "Dataset", "ExperienceStore"]
