"""Each engine's options, declared once with what they change.

An option either changes what a run writes (an output setting: dtype, revision, max_model_len,
kv_cache_dtype, speculative decoding…) or only how fast it goes (throughput: batch size, device,
concurrency, memory fraction, the server's address…). Every field says which, through `output()`
or `throughput()`: the run's settings hash (`store.settings.OutputSettings`) keeps the output
options a user gave and leaves the throughput ones out, so a resume with a bigger batch goes on
while a resume with another dtype is refused. A field declared with neither is refused by
`engine_option_kinds`, so a new option cannot silently fall on either side.

This module imports nothing heavy (the engines themselves import torch, vLLM or httpx), so the
settings of a run can be hashed where no engine is installed (a sweep's dry run, a Ray driver).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from quantscope.errors import QuantscopeError

_CHANGES_OUTPUTS = "changes_outputs"


def output(default: Any) -> Any:
    """A field for an option that changes what a run writes (part of the run's settings)."""
    return field(default=default, metadata={_CHANGES_OUTPUTS: True})


def throughput(default: Any) -> Any:
    """A field for an option that changes only how fast a run goes (left out of its settings)."""
    return field(default=default, metadata={_CHANGES_OUTPUTS: False})


def changes_outputs(options_type: type) -> dict[str, bool]:
    """Each option of an options dataclass -> whether it changes outputs. Raises QuantscopeError
    for a field declared with neither `output()` nor `throughput()`."""
    kinds = {}
    for f in dataclasses.fields(options_type):
        if _CHANGES_OUTPUTS not in f.metadata:
            raise QuantscopeError(
                f"{options_type.__name__}.{f.name}: declare it with output(...) or throughput(...) "
                "(quantscope.engines.options) so runs know whether it changes what they write"
            )
        kinds[f.name] = f.metadata[_CHANGES_OUTPUTS]
    return kinds


@dataclass(frozen=True)
class TransformersOptions:
    """Engine options. `dtype`: auto (the checkpoint's) | bfloat16 | float16 | float32;
    `device`: auto (cuda when visible, else cpu) | cpu | cuda | cuda:N; `batch_size`: requests per
    `generate` call; `revision`: hub revision; `trust_remote_code`: run the repository's own code."""

    dtype: str = output("auto")
    device: str = throughput("auto")
    batch_size: int = throughput(16)
    revision: str | None = output(None)
    trust_remote_code: bool = output(False)


@dataclass(frozen=True)
class VLLMOptions:
    """Engine options, passed to `vllm.LLM`. `dtype`: auto | bfloat16 | float16 | float32;
    `max_model_len`: context length in tokens (prompt + completion; None: the model's);
    `gpu_memory_utilization`: fraction of GPU memory vLLM may take (on CPU: of RAM);
    `kv_cache_gib`: explicit KV cache size in GiB (CPU default 1); `tensor_parallel_size`: GPUs per
    model; `enforce_eager`: no CUDA graphs / compile; `in_process`: run the engine core in this
    process (None: yes on CPU, no on GPU); `revision`, `trust_remote_code`: as in transformers;
    `kv_cache_dtype`: auto | fp8 (an FP8 KV cache changes outputs: an output setting);
    `max_num_seqs`: sequences scheduled at once (None: vLLM's default); `enable_prefix_caching`;
    `data_parallel_size`: 1 (vLLM refuses more in one process; see `__post_init__`);
    `speculative_config`: e.g.
    `{"method": "mtp", "num_speculative_tokens": 2}` to draft with a Qwen3.5 checkpoint's own MTP
    head (vLLM maps qwen3_5 / qwen3_5_moe to its Qwen3_5(Moe)MTP drafter: vllm/config/speculative.py;
    GPU only: vLLM cannot load Qwen3.5 on this CPU). quantscope's exports keep the `mtp.*` weights:
    16-bit under the safe recipes and the schemes with calibrated activation scales (static FP8,
    NVFP4 W4A4), otherwise in the recipe's scheme (RTN: AutoRound's for integer schemes,
    `quantize.rtn_layers` for FP8 dynamic / block, NVFP4A16 and MXFP4); `mtp.fc` stays 16-bit.
    `max_model_len` must hold prompt + cap; a request that does not fit fails alone (recorded, the
    others go on)."""

    dtype: str = output("auto")
    max_model_len: int | None = output(None)
    gpu_memory_utilization: float = throughput(0.9)
    kv_cache_gib: float | None = throughput(None)
    tensor_parallel_size: int = throughput(1)
    enforce_eager: bool = throughput(False)
    in_process: bool | None = throughput(None)
    revision: str | None = output(None)
    trust_remote_code: bool = output(False)
    kv_cache_dtype: str = output("auto")
    max_num_seqs: int | None = throughput(None)
    enable_prefix_caching: bool | None = throughput(None)
    data_parallel_size: int = throughput(1)
    speculative_config: dict[str, Any] | None = output(None)

    def __post_init__(self) -> None:
        # vllm.LLM raises for data_parallel_size > 1 outside an external launcher: its offline
        # data parallelism is one process per rank (vllm/entrypoints/llm.py, LLM.__init__).
        if self.data_parallel_size > 1:
            raise QuantscopeError(
                f"engine option data_parallel_size={self.data_parallel_size}: vLLM runs data "
                "parallelism as one engine process per replica, not in one process. Use a sweep "
                "on Ray with `replicas` under eval (each replica an engine actor), or serve the "
                f"model with `vllm serve MODEL --data-parallel-size {self.data_parallel_size}` "
                "and evaluate it with --engine openai"
            )


@dataclass(frozen=True)
class OpenAIOptions:
    """Engine options. `base_url`: the server's OpenAI root (ending in /v1); `api_key`: sent as a
    bearer token (None: $OPENAI_API_KEY, else none); `concurrency`: requests in flight;
    `timeout_s`: seconds per HTTP request; `max_retries`: retries per request after the first try;
    `backoff_s`: first retry delay in seconds, doubled each retry (capped at 60, with jitter);
    `tokenizer`: tokenizer path / hub id for counting thinking tokens when the server does not;
    `abort_after`: failed connection attempts in a row after which the server counts as down (0:
    max(3, min(concurrency, 8))). Size `concurrency` to what the server batches: vLLM's
    `--max-num-seqs` (256 by default), less when long generations fill its KV cache."""

    base_url: str = throughput("http://127.0.0.1:8000/v1")
    api_key: str | None = throughput(None)
    concurrency: int = throughput(64)
    timeout_s: float = throughput(3600.0)
    max_retries: int = throughput(5)
    backoff_s: float = throughput(1.0)
    tokenizer: str | None = throughput(None)
    abort_after: int = throughput(0)
