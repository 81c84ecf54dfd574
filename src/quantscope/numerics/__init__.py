"""Numerics shared by every stage that runs a quantized model in float: quantize-dequantize as each
format rounds (`fakequant`), layer inputs rounded as the serving kernel rounds them (`actquant`),
what vLLM runs per format, layer kind and GPU (`served`), and a twin's marker (`twin_marker`).

Below the checkpoint loader, the quantize stage and the sensitivity profiler, which all use them.
"""
