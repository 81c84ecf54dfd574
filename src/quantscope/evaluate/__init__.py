"""The eval stage: `spec` (the run spec), `requests` (one chat request per item and sample),
`runner` (variant x task x k samples -> judged rows in the store; resumable), `forced` (stored
samples cut at a budget and made to answer), `until_decided` (samples added until each verdict
against the baseline is decided). What a variant's weights take is `quantize.weight_memory`, read
from the export's manifest.
"""
