"""The plan stage: which format each linear layer is stored in, before anything is quantized.

`recipe` (recipes, presets, YAML, the footprint), `derive` (the recipe a quantized checkpoint used,
and that recipe on another model: `plan --like`) and `serving` (what a GPU holds once vLLM pages the
KV cache and the linear-attention state; sequences at a context; the decode roofline).
"""
