"""Multimodal transformer: image, text and table tokens fused early in one encoder (issue 4).

  from metajax.multimodal import ModelConfig, MultimodalTransformer, Preprocessor, TableSchema

See `model.py` for the module and a runnable example, `inputs.py` for raw inputs,
`train.py` for Sort-of-CLEVR training, `fewshot.py` for ProtoNet on fused embeddings.
"""

from metajax.multimodal.inputs import Preprocessor, TableSchema
from metajax.multimodal.model import MODALITIES, ModelConfig, MultimodalTransformer, check_batch
from metajax.multimodal.tokenize import encode, load_tokenizer, train_tokenizer

__all__ = ["MODALITIES", "ModelConfig", "MultimodalTransformer", "Preprocessor", "TableSchema",
           "check_batch", "encode", "load_tokenizer", "train_tokenizer"]
