"""Multimodal transformer (early fusion of image, text and table tokens) on Sort-of-CLEVR.

Run (about 1 hour for the 40,000 steps on an idle 2-core CPU, about 2 on a loaded one, then
about 20 min for the baselines, test tables and few-shot):
  python -m launch.main --config=configs/multimodal_sortofclevr.py --workdir=/tmp/mm_soc
Tiny smoke run (seconds):
  python -m launch.main --config=configs/multimodal_sortofclevr.py:tiny --workdir=/tmp/mm_tiny

Should reach about 99.9% non-relational and 97.5% relational test accuracy (the issue's
target is >= 95% on both; the published CNN+RN > 94% on both, CNN+MLP 63% relational),
the validation split passing 95% on both about a quarter of the way through; the 2,000-step
late-fusion baseline and the ablations trained without the image far below it.
Results: BUILD_NOTES.md.

Writes report.md (accuracy beside the published CNN+RN and CNN+MLP, test-time modality
ablations, early vs late fusion, trained ablations, few-shot colour of the closest object:
ProtoNet on the frozen fused embeddings and on an episodically meta-trained head),
results.json, and model.json (`metajax.load_trained(workdir)` answers raw
images, questions and tables). Rerunning with the same workdir resumes from the latest
checkpoint; a different config is refused naming the keys, except more train.steps and
any eval.* setting (the baselines train after the main model in their own
subdirectories, named by their steps). train.stop_at > 0 stops training once the
validation split reaches it on both question kinds; 0 trains the whole schedule, since
the cool-down is where relational accuracy gains most.
"""

import ml_collections

from configs import common


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  common.check_mode(mode)
  c = common.config("multimodal", seed=0)
  # per_host_shard: with P processes each generates only its 1/P of the training scenes
  # (seeded per scene) and samples its rows of every batch from them, as big_vision's hosts
  # read their own shard; val and test stay whole on every host. False: every process holds
  # every scene and the batches are those of one process (the published numbers).
  c.data = common.data("sort_of_clevr", num_train=9800, num_test=200, num_val=200, table_rows=3,
                       per_host_shard=False)
  # The question tokenizer: a WordPiece of vocab_size trained on the training questions and
  # saved in the workdir, or a save_pretrained directory; long questions are an error unless
  # truncate_text.
  c.text = dict(vocab_size=256, tokenizer="", truncate_text=False)
  # Every ModelConfig field a run chooses; the input shapes, table schema, vocabulary and
  # answer count come from the data (see metajax/multimodal/model.py).
  c.model = common.model("multimodal_transformer", stem="conv", stem_channels=(32, 32, 32, 32),
                         image_queries=0, image_pos="sincos", image_depth=0, image_merge=1,
                         text_condition="cls", patch=15, dim=64, depth=2, heads=4, mlp_dim=128,
                         max_text_len=16, fusion="early", dtype="float32")
  # AdamW, global-norm clipping; 'wsd': linear warmup, constant, then linear to 0 over the
  # last 20% of the steps.
  c.optimizer = common.optimizer("adamw", 1e-3, weight_decay=1e-4, clip_norm=1.0,
                                 schedule="wsd", warmup_steps=200, decay_fraction=0.2)
  # 8 questions of each of 16 images per step. colour_curriculum: the loss counts questions
  # about red only, then one more colour every 200 steps (all six from step 1,000; 0: off),
  # which binds colour words to image objects far sooner (bench/multimodal_binding.py).
  # regression_weight: the auxiliary (x, y) of the object the answer is about; at 10 its
  # gradient is comparable to the answer's and the model reads the image much sooner.
  # stop_at: stop once the validation split reaches it on relational and non-relational
  # questions (the test set is never used; 0: off). Changing it on resume is refused.
  c.train = common.train(40000, log_every=50, checkpoint_every=500, batch_size=128,
                         questions_per_image=8, regression_weight=10.0,
                         drop=dict(image=0.1, text=0.0, table=0.3), colour_curriculum=200,
                         stop_at=0.0, eval_every=500, eval_questions=4400)
  # Evaluation, free to change on resume: batch size; baselines trained after the main model
  # (steps 0: skip, -1: as many as the main model trained): late fusion with the same
  # encoder size, and the same model trained on a subset of the modalities; few-shot
  # (episodes 0: skip), also alone on a finished run: configs/multimodal_fewshot.py.
  c.eval = dict(batch_size=500, late_fusion_steps=2000,
                ablations=("image+text", "text+table", "text only", "image only"),
                ablation_steps=2000, fewshot=fewshot_config())

  if mode == "tiny":
    c.data.update(num_train=40, num_test=20, num_val=10)
    # The patch stem compiles in a fraction of the conv stem's time (tests run every baseline).
    c.model.update(dim=16, depth=1, heads=2, mlp_dim=32, stem="patch", stem_channels=(8, 8, 8, 8))
    c.optimizer.warmup_steps = 1
    c.train.update(steps=4, batch_size=8, colour_curriculum=1, questions_per_image=2,
                   log_every=2, eval_every=2, checkpoint_every=2, eval_questions=40)
    c.eval.update(batch_size=64, late_fusion_steps=2, ablations=("text only",),
                  ablation_steps=2)
    c.eval.fewshot = fewshot_config("tiny")
  return c


def fewshot_config(mode: str = "") -> ml_collections.ConfigDict:
  """eval.fewshot: ProtoNet episodes (ways-way, shots and 1 shot, queries per class) on the
  colour of the closest object, test split, for the frozen fused embeddings and an episodic
  head (metajax/multimodal/episodic_head.py; head.steps 0: skip). The head fine-tunes the
  last tune_blocks encoder blocks (+ an MLP to proj_dim, 0: none) with the ProtoNet loss on
  meta_batch episodes per step of `colours` synthetic colours (each >= min_distance in RGB
  from the six real ones) painted on examples_per_class training scenes each."""
  fs = ml_collections.ConfigDict(dict(
      ways=5, shots=5, queries=5, episodes=600,
      head=dict(steps=600, tune_blocks=2, proj_dim=32, meta_batch=4, colours=30,
                examples_per_class=60, min_distance=80.0, log_every=50,
                optimizer=common.optimizer("adam", 1e-3))))
  if mode == "tiny":
    fs.update(ways=3, shots=2, queries=2, episodes=4)
    fs.head.update(steps=2, tune_blocks=1, meta_batch=1, colours=3, examples_per_class=8,
                   log_every=1)
  return fs
