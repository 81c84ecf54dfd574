"""The eval stage: `spec` (the run spec), `requests` (one chat request per item and sample),
`runner` (variant x task x k samples -> judged rows in the store; resumable), `forced` (stored
samples cut at a budget and made to answer), `until_decided` (samples added until each verdict
against the baseline is decided) and `weight_memory` (what a variant's weights take, recorded with
its rows).
"""
