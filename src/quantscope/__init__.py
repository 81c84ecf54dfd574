"""quantscope: choose and verify quantized reasoning LLMs for limited GPU memory.

The pipeline, one module per stage: anatomy -> formats/recipe (footprint) -> quantize ->
engines/tasks/runner/store (eval) -> analysis/report (recommend) -> profile.
"""

__version__ = "0.1.0"
