"""MAML (second order) on sinusoid regression, the MAML protocol.

MLP 40-40, K=10, 1 inner step (alpha=0.01), meta-batch 25, Adam 1e-3, 70k steps:

  python -m launch.main --config=configs/maml_sinusoid.py --workdir=runs/maml_sinusoid
  # a shorter budget: --config.num_steps=5000

Published (MAML paper, K=5, 1 / 5 / 10 test steps): MSE about 0.67 / 0.38 / 0.35
(MAML); Meta-SGD paper, K=5, 1 step: Meta-SGD 0.90 vs MAML 1.13. Measured: BUILD_NOTES.md.
`:tiny` runs a few steps on CPU.
"""

from metajax.meta import maml_configs


def get_config(mode: str = ""):
  return maml_configs.sinusoid("maml", mode)
