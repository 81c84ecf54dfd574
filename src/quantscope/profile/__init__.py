"""Sensitivity profiling and recipe search: which parts of a model survive quantization.

`fakequant` quantize-dequantizes weights in place exactly as each format rounds;
`sensitivity` measures, per group of layers, the KL divergence of next-token distributions
against the original model, overall and by token position; `search` picks the recipe with the
least summed damage that fits a memory budget.
"""
