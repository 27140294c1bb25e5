"""Compression of trained models: int8 weight quantization (`quantize`), magnitude pruning
with a masked fine-tune (`prune`) and distillation into a smaller student (`distill`)."""
