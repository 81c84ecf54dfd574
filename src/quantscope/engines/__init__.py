"""Generation engines behind one protocol (`quantscope.engines.base.Engine`), found by name
(`registry`): transformers (CPU / offline default), vLLM offline, any OpenAI-compatible server.
"""

from quantscope.engines.base import (
    ChatRequest,
    Engine,
    Generation,
    Message,
    ProgressCallback,
    SamplingParams,
    split_thinking,
)
from quantscope.engines.registry import ENGINES, engine_options, get_engine

__all__ = [
    "ENGINES",
    "ChatRequest",
    "Engine",
    "Generation",
    "Message",
    "ProgressCallback",
    "SamplingParams",
    "engine_options",
    "get_engine",
    "split_thinking",
]
