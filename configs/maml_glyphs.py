"""MAML (second order) on the offline glyphs dataset, the MAML Omniglot protocol.

conv4 (64 filters), 5-way 1-shot, 1 inner step (alpha=0.4; 3 at meta-test),
meta-batch 32, Adam 1e-3; meta-test on glyphs and the real UCI digits:

  python -m launch.main --config=configs/maml_glyphs.py --workdir=runs/maml_glyphs_1shot
  python -m launch.main --config=configs/maml_glyphs.py --workdir=runs/maml_glyphs_5shot \
      --config.shots=5 --config.eval.shots='(5,)'
  python -m launch.main --config=configs/maml_glyphs.py:20way --workdir=runs/maml_glyphs_20way

(MAML on Omniglot: 98.7% 5-way 1-shot, 99.9% 5-shot; glyphs is an offline
stand-in, so numbers are not comparable.) Measured: BUILD_NOTES.md.
`:tiny` runs a few steps on CPU.
"""

from metajax.meta import maml_configs


def get_config(mode: str = ""):
  return maml_configs.images("maml", mode)
