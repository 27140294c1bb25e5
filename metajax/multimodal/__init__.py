"""Multimodal transformer: image, text and table tokens fused early in one encoder (issue 4).

  from metajax.multimodal import ModelConfig, MultimodalTransformer, Preprocessor, TableSchema

See `model.py` for the (Flax Linen) module and a runnable example, `checks.py` for the
input checks, `inputs.py` for raw inputs, `train.py` for Sort-of-CLEVR training,
`fewshot.py` for ProtoNet on fused embeddings.
"""

from metajax.multimodal.checks import check_batch, check_values
from metajax.multimodal.inputs import Preprocessor, TableSchema
from metajax.multimodal.model import MODALITIES, ModelConfig, MultimodalTransformer, example_batch
from metajax.multimodal.tokenize import encode, load_tokenizer, train_tokenizer

__all__ = ["MODALITIES", "ModelConfig", "MultimodalTransformer", "Preprocessor", "TableSchema",
           "check_batch", "check_values", "encode", "example_batch", "load_tokenizer",
           "train_tokenizer"]
