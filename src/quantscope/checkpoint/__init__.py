"""The checkpoint stage: what a checkpoint holds, read from headers and configs, and the one loader.

`anatomy` (the records: tensors, groups, fused sets; safetensors headers), `load` (any source ->
`Anatomy`: a directory, a bare config via `from_config`, a GGUF file via `gguf_file`, a hub id),
`declared` (what a quantization config declares per linear module), `contents` (what each linear
weight is really stored as), `modeling` (the one model loader and the one next-token KL) and
`compressed_experts` (NVFP4 MoE experts restored as stored).
"""
