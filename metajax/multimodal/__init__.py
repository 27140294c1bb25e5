"""Multimodal transformer: image, text and table tokens fused in one encoder.

  from metajax.multimodal import ModelConfig, MultimodalTransformer, Preprocessor, TableSchema

`model.py`: the Flax Linen module (registered as 'multimodal_transformer' in
`metajax.models`) with a runnable example; `checks.py`: input checks; `inputs.py`: raw
images, strings and tables -> batches; `tokenize.py`: tokenizers; `steps.py`: the pure
train step, predict and grouped evaluation; `fewshot.py`: a ProtoNet head on embeddings;
`saved.py`: a trained model back from its workdir (`metajax.load_trained`). The
Sort-of-CLEVR experiment is `metajax.experiments.sort_of_clevr`.
"""

from metajax.multimodal.checks import check_batch, check_values, example_batch
from metajax.multimodal.inputs import Preprocessor, TableSchema
from metajax.multimodal.model import MODALITIES, ModelConfig, MultimodalTransformer, make_multimodal
from metajax.multimodal.tokenize import encode, load_tokenizer, train_tokenizer

__all__ = ["MODALITIES", "ModelConfig", "MultimodalTransformer", "Preprocessor", "TableSchema",
           "check_batch", "check_values", "encode", "example_batch", "load_tokenizer",
           "make_multimodal", "train_tokenizer"]
