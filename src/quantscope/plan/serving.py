"""Serving memory: what a GPU holds once vLLM has paged the KV cache and the linear-attention state,
how many sequences fit at a context, and how fast decoding can go at best.

The user's budget is GPU memory, not weights. vLLM reserves `gpu_memory_utilization` of the board,
loads the weights, measures the activation peak and the CUDA graphs in a profiling run, and gives
the rest to one pool of fixed-size blocks. Qwen3.5's hybrid stack changes the arithmetic: only the
full-attention layers keep a per-token KV cache; every Gated DeltaNet layer keeps one conv state
(model dtype) and one recurrent state (`mamba_ssm_dtype`, float32 in the real configs) per
sequence, and vLLM pads those state pages to the attention page size. This module follows vLLM
0.32's arithmetic, each step citing the file it mirrors:

- state shapes and dtypes: `MambaStateShapeCalculator.gated_delta_net_state_shape` and
  `MambaStateDtypeCalculator.gated_delta_net_state_dtype` (`model_executor/layers/mamba/
  mamba_utils.py`), fed as `Qwen3_5ForConditionalGeneration.get_mamba_state_*_from_config` feeds
  them (`model_executor/models/qwen3_5.py`); the recurrent dtype comes from the config's
  `mamba_ssm_dtype` (`Qwen3_5ForConditionalGenerationConfig`, `model_executor/models/config.py`);
- page alignment: the attention block grows until its page holds one state page, and the state
  page is padded to it (`Platform._align_hybrid_block_size`, `platforms/interface.py`), with
  FlashAttention's kernel block of 16 tokens (`v1/attention/backends/flash_attn.py`);
- groups and blocks: layers are split into groups of equal size, one block table each, all
  drawing from one pool whose block spans one group's pages
  (`_get_kv_cache_groups_uniform_page_size`, `_get_kv_cache_bytes_per_block` and
  `get_kv_cache_config_from_groups`, `v1/core/kv_cache_utils.py`);
- concurrency: a sequence at the context takes cdiv(context, block size) blocks per attention
  group and, per state group, 2 blocks with prefix caching on (vLLM's default "align" mamba cache
  mode) or 1 without (`MambaSpec.max_memory_usage_bytes`, `v1/kv_cache_interface.py`;
  `get_max_concurrency_for_kv_cache_config`, `kv_cache_utils.py`).

What vLLM measures at start-up (the activation peak, CUDA graphs, memory outside torch) is only
estimated here, and labelled so (`EngineReserve`). The decode roofline is an upper bound: bytes
one decode step must read (the weights it touches, active experts only for MoE, plus the KV cache
and states) over the GPU's memory bandwidth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from quantscope.checkpoint.anatomy import text_config
from quantscope.engines.base import DEFAULT_MAX_TOKENS
from quantscope.errors import QuantscopeError
from quantscope.gpus import GPU

if TYPE_CHECKING:
    from quantscope.plan.recipe import Footprint, Plan

GIB = 1 << 30
DEFAULT_CONTEXT = DEFAULT_MAX_TOKENS
"""Tokens per sequence (vLLM's max_model_len) the KV cache is sized for: the default cap."""
MAX_NUM_SEQS = 256
"""vLLM's default max_num_seqs: the decode batch never exceeds it, whatever the KV pool holds."""
DEFAULT_PROMPT_TOKENS = 256
"""Tokens assumed per prompt where prompts are not measured (the store records completions
only): a math problem in a chat template."""
DEFAULT_UTILIZATION = 0.92
"""vLLM 0.32's default `gpu_memory_utilization` (`config/cache.py`)."""
KERNEL_BLOCK = 16
"""FlashAttention's smallest kernel block, `MultipleOf(16)` (`v1/attention/backends/flash_attn.py`),
and vLLM's default block size (`CacheConfig.DEFAULT_BLOCK_SIZE`)."""

_DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp8": 1}
_KV_DTYPES = {"auto": None, "float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class CacheShape:
    """What the KV cache and the recurrent state depend on, read from a model's (text) config."""

    full_layers: int
    """Layers that keep a KV cache of `kv_heads` × `head_dim` per token."""
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    """The model dtype's size (bytes): the default KV and conv-state dtype."""
    linear_layers: int = 0
    """Gated DeltaNet layers: a conv state of `conv_dim` × (`conv_kernel` − 1) and a recurrent
    state of `v_heads` × `v_dim` × `k_dim` per sequence."""
    conv_dim: int = 0
    conv_kernel: int = 0
    v_heads: int = 0
    k_dim: int = 0
    v_dim: int = 0
    ssm_dtype_bytes: int = 4
    """The recurrent state's element size (bytes)."""


def cache_shape(config: Mapping[str, Any], where: str = "config") -> CacheShape:
    """The cache shape of a model config (a multimodal config's `text_config` is used).

    Layers are read from `layer_types` ("full_attention" / "linear_attention"); a config without
    it is all full attention (Qwen3, Llama). Raises QuantscopeError naming the missing field.
    """
    text = text_config(config)
    layers = _int(text, "num_hidden_layers", where)
    types = list(text.get("layer_types") or _default_layer_types(text, layers))
    unknown = sorted(set(types) - {"full_attention", "linear_attention"})
    if unknown:
        raise QuantscopeError(
            f"{where}: layer_types has {unknown}; quantscope pages full and linear attention"
        )
    heads = _int(text, "num_attention_heads", where)
    dtype = str(text.get("dtype") or text.get("torch_dtype") or config.get("torch_dtype") or "bfloat16")
    shape = CacheShape(
        full_layers=types.count("full_attention"),
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or _int(text, "hidden_size", where) // heads),
        dtype_bytes=_DTYPE_BYTES.get(dtype, 2),
    )
    linear = types.count("linear_attention")
    if not linear:
        return shape
    k_heads, v_heads = _int(text, "linear_num_key_heads", where), _int(text, "linear_num_value_heads", where)
    k_dim, v_dim = _int(text, "linear_key_head_dim", where), _int(text, "linear_value_head_dim", where)
    ssm = str(text.get("mamba_ssm_dtype") or dtype)
    return replace(
        shape,
        linear_layers=linear,
        conv_dim=k_dim * k_heads * 2 + v_dim * v_heads,
        conv_kernel=_int(text, "linear_conv_kernel_dim", where),
        v_heads=v_heads,
        k_dim=k_dim,
        v_dim=v_dim,
        ssm_dtype_bytes=_DTYPE_BYTES.get(ssm, 4),
    )


def _default_layer_types(text: Mapping[str, Any], layers: int) -> list[str]:
    """Layer kinds of a config without `layer_types`: every `full_attention_interval`-th layer full
    (Qwen3-Next's rule, transformers' `Qwen3NextConfig`), else all full attention (Qwen3, Llama)."""
    interval = text.get("full_attention_interval")
    if isinstance(interval, int) and interval > 0 and "linear_num_value_heads" in text:
        return ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(layers)]
    return ["full_attention"] * layers


def _int(config: Mapping[str, Any], key: str, where: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise QuantscopeError(
            f"{where}: field {key!r} is {value!r}; a positive integer is needed to size the cache"
        )
    return value


@dataclass(frozen=True)
class ServingOptions:
    """How vLLM is asked to serve: `context` tokens per sequence (max_model_len), the KV cache
    dtype ("auto" = the model's, or "fp8"), `tp` GPUs per model (tensor parallel), the
    fraction of the board vLLM may use, and whether prefix caching is on (vLLM's default; it
    keeps 2 state blocks per sequence instead of 1)."""

    context: int = DEFAULT_CONTEXT
    kv_dtype: str = "auto"
    tp: int = 1
    gpu_memory_utilization: float = DEFAULT_UTILIZATION
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.context <= 0:
            raise QuantscopeError(f"--context {self.context}: give a positive number of tokens")
        if self.kv_dtype not in _KV_DTYPES:
            raise QuantscopeError(f"--kv-dtype {self.kv_dtype!r}: use one of {', '.join(_KV_DTYPES)}")
        if self.tp <= 0:
            raise QuantscopeError(f"--tp {self.tp}: give a positive number of GPUs")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise QuantscopeError(
                f"gpu_memory_utilization {self.gpu_memory_utilization}: use a fraction in (0, 1]"
            )


@dataclass(frozen=True)
class CacheLayout:
    """vLLM's paging of one model on one GPU (per tensor-parallel rank; bytes, tokens).

    `kv_bytes_per_token`: KV cache of one token over every full-attention layer.
    `state_bytes_per_sequence`: conv + recurrent state of one sequence over every linear-attention
    layer, unpadded (vLLM keeps 2 of them per sequence with prefix caching). `block_size`: tokens
    per block after hybrid alignment; `page_bytes`: one layer's page per block; `group_size`:
    layers per KV cache group; `attention_groups` / `state_groups`: groups of each kind;
    `bytes_per_block`: what one pool block costs; `state_blocks`: blocks each state group keeps
    per sequence.
    """

    kv_bytes_per_token: int
    state_bytes_per_sequence: int
    block_size: int
    page_bytes: int
    group_size: int
    attention_groups: int
    state_groups: int
    bytes_per_block: int
    state_blocks: int

    def blocks_per_sequence(self, tokens: int) -> int:
        """Pool blocks one sequence of `tokens` tokens holds."""
        return self.attention_groups * _cdiv(tokens, self.block_size) + self.state_groups * self.state_blocks

    def bytes_per_sequence(self, tokens: int) -> int:
        """Pool bytes one sequence of `tokens` tokens holds, paging and padding included."""
        return self.blocks_per_sequence(tokens) * self.bytes_per_block


def cache_layout(shape: CacheShape, options: ServingOptions = ServingOptions()) -> CacheLayout:
    """vLLM's block layout for `shape` served with `options` (see the module docstring)."""
    tp = options.tp
    kv_heads = max(1, shape.kv_heads // tp)  # ModelConfig.get_num_kv_heads: replicated below 1 per rank
    kv_bytes = _KV_DTYPES[options.kv_dtype] or shape.dtype_bytes
    attn_page_1 = 2 * kv_heads * shape.head_dim * kv_bytes  # K and V, one token, one layer
    state = _state_page(shape, tp)
    block_size = KERNEL_BLOCK
    if state:  # Platform._align_hybrid_block_size: attention page >= state page, state padded to it
        block_size = max(block_size, KERNEL_BLOCK * _cdiv(state, KERNEL_BLOCK * attn_page_1))
    page = block_size * attn_page_1
    counts = [n for n in (shape.full_layers, shape.linear_layers) if n]
    group_size = min(counts)
    if max(counts) < 1.5 * min(counts):  # _get_kv_cache_groups_uniform_page_size's padding heuristic
        group_size = max(counts)
    return CacheLayout(
        kv_bytes_per_token=shape.full_layers * attn_page_1,
        state_bytes_per_sequence=shape.linear_layers * state,
        block_size=block_size,
        page_bytes=page,
        group_size=group_size,
        attention_groups=_cdiv(shape.full_layers, group_size) if shape.full_layers else 0,
        state_groups=_cdiv(shape.linear_layers, group_size) if shape.linear_layers else 0,
        bytes_per_block=group_size * page,
        state_blocks=2 if options.prefix_caching else 1,
    )


def _state_page(shape: CacheShape, tp: int) -> int:
    """One linear-attention layer's state bytes per sequence on one rank (0 without such layers)."""
    if not shape.linear_layers:
        return 0
    if shape.conv_dim % tp or shape.v_heads % tp:
        raise QuantscopeError(
            f"--tp {tp} does not divide the linear-attention state ({shape.conv_dim} conv channels, "
            f"{shape.v_heads} value heads); vLLM refuses it: pick a divisor"
        )
    conv = (shape.conv_dim // tp) * (shape.conv_kernel - 1) * shape.dtype_bytes
    recurrent = (shape.v_heads // tp) * shape.v_dim * shape.k_dim * shape.ssm_dtype_bytes
    return conv + recurrent


@dataclass(frozen=True)
class EngineReserve:
    """Memory vLLM takes besides weights and the KV pool, per GPU (bytes). vLLM measures these at
    start-up (a profiling forward of `max_num_batched_tokens`, then the CUDA graphs); here they are
    estimates, and `estimated` says so: activations from the widest hidden state times the
    batched tokens plus the sampler's float32 logits; CUDA graphs and memory outside torch (CUDA
    context, NCCL) as typical figures."""

    activation_bytes: int
    cudagraph_bytes: int
    non_torch_bytes: int
    estimated: bool = True

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.cudagraph_bytes + self.non_torch_bytes


def engine_reserve(
    config: Mapping[str, Any], tp: int = 1, batched_tokens: int = 8192, max_seqs: int = MAX_NUM_SEQS
) -> EngineReserve:
    """The estimated reserve for `config` (`batched_tokens`: vLLM's max_num_batched_tokens, 8192
    by default for the offline engine; `max_seqs`: max_num_seqs, whose logits the sampler holds)."""
    text = text_config(config)
    hidden = int(text.get("hidden_size") or 0)
    routed = int(text.get("moe_intermediate_size") or 0) * int(text.get("num_experts_per_tok") or 0)
    widest = max(int(text.get("intermediate_size") or 0), routed, 4 * hidden)
    activations = batched_tokens * (4 * hidden + 2 * widest) * 2 // tp  # 16-bit, sharded over ranks
    logits = max_seqs * int(text.get("vocab_size") or 0) * 4 * 2  # float32 logits and probabilities
    return EngineReserve(activations + logits, GIB, GIB // 2)


@dataclass(frozen=True)
class Capacity:
    """What one GPU holds for one variant served with `options` (bytes per GPU).

    `kv_pool_bytes` is what is left for the KV pool (negative when the weights and reserve do not
    fit); `num_blocks` the pool's blocks; `max_concurrency` the sequences at `options.context`
    tokens that fit at once, as vLLM computes it (fractional; below 1 vLLM refuses to start).
    """

    weight_bytes: int
    gpu_bytes: int
    usable_bytes: int
    reserve: EngineReserve
    layout: CacheLayout
    kv_pool_bytes: int
    num_blocks: int
    context: int
    max_concurrency: float

    @property
    def fits(self) -> bool:
        """Whether vLLM can start: at least one sequence at the full context fits."""
        return self.max_concurrency >= 1

    def concurrency_at(self, tokens: float) -> float:
        """Sequences of `tokens` tokens the pool holds at once."""
        return self.num_blocks / self.layout.blocks_per_sequence(max(1, math.ceil(tokens)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight_bytes": self.weight_bytes,
            "gpu_bytes": self.gpu_bytes,
            "usable_bytes": self.usable_bytes,
            "reserve": {**asdict(self.reserve), "total_bytes": self.reserve.total_bytes},
            "kv_bytes_per_token": self.layout.kv_bytes_per_token,
            "state_bytes_per_sequence": self.layout.state_bytes_per_sequence,
            "bytes_per_sequence": self.layout.bytes_per_sequence(self.context),
            "block_size": self.layout.block_size,
            "kv_pool_bytes": self.kv_pool_bytes,
            "num_blocks": self.num_blocks,
            "context": self.context,
            "max_concurrency": self.max_concurrency,
            "fits": self.fits,
        }


def capacity(
    weight_bytes: int,
    gpu_bytes: int,
    layout: CacheLayout,
    reserve: EngineReserve,
    options: ServingOptions = ServingOptions(),
) -> Capacity:
    """The KV pool and concurrency of a variant whose weights take `weight_bytes` in all, served on
    GPUs of `gpu_bytes` each (weights split evenly over `options.tp` ranks)."""
    usable = int(gpu_bytes * options.gpu_memory_utilization)
    per_gpu_weights = _cdiv(weight_bytes, options.tp)
    pool = usable - per_gpu_weights - reserve.total_bytes
    blocks, concurrency = pool_concurrency(pool, layout, options.context)
    return Capacity(
        per_gpu_weights, gpu_bytes, usable, reserve, layout, pool, blocks, options.context, concurrency
    )


def pool_concurrency(pool_bytes: int, layout: CacheLayout, context: int) -> tuple[int, float]:
    """(blocks, sequences of `context` tokens at once) of a KV pool of `pool_bytes` bytes, as
    `get_kv_cache_config_from_groups` and `get_max_concurrency_for_kv_cache_config` compute them."""
    blocks = max(0, pool_bytes) // layout.bytes_per_block
    return blocks, blocks / layout.blocks_per_sequence(context)


# ---- the decode roofline ---------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeBytes:
    """Bytes one decode step reads per GPU, by source: `dense_bytes` (every weight but the routed
    experts, read once per step whatever the batch), `expert_bytes` (all routed experts) with
    `experts` per layer of which `active` are routed to each token."""

    dense_bytes: int
    expert_bytes: int = 0
    experts: int = 0
    active: int = 0

    def weights_read(self, batch: int) -> float:
        """Weight bytes a step of `batch` sequences reads: the dense part, plus the experts the
        batch touches, expected E·(1 − (1 − k/E)^batch) per layer under uniform routing."""
        if not self.experts:
            return float(self.dense_bytes + self.expert_bytes)
        touched = 1 - (1 - self.active / self.experts) ** max(1, batch)
        return self.dense_bytes + self.expert_bytes * touched


def decode_bytes(bytes_by_group: Mapping[str, int], config: Mapping[str, Any], tp: int = 1) -> DecodeBytes:
    """The decode-step bytes of a footprint's `bytes_by_group` (see `recipe.Footprint`): vision
    and MTP weights are not read while decoding text; the embedding reads one row per token
    (negligible) unless it is tied to the LM head."""
    text = text_config(config)
    tied = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    skipped = {"vision", "mtp", "routed_experts"} | (set() if tied else {"embed"})
    dense = sum(n for g, n in bytes_by_group.items() if g not in skipped)
    return DecodeBytes(
        dense_bytes=dense // tp,
        expert_bytes=bytes_by_group.get("routed_experts", 0) // tp,
        experts=int(text.get("num_experts") or 0),
        active=int(text.get("num_experts_per_tok") or 0),
    )


@dataclass(frozen=True)
class Roofline:
    """The decode-throughput upper bound at `batch` sequences of `context` tokens on average:
    `step_bytes` read per step over `bandwidth` (bytes/s) gives `tokens_per_s` (all sequences
    together, per model replica). An upper bound: real decoding adds compute, launch and
    scheduling time."""

    batch: int
    context: float
    step_bytes: float
    bandwidth: float
    tokens_per_s: float


def roofline(weights: DecodeBytes, layout: CacheLayout, gpu: GPU, batch: int, context: float) -> Roofline:
    """Decode tokens/s at best for `batch` sequences of mean length `context` tokens on `gpu`
    (`weights` and `layout` per tensor-parallel rank: each rank reads its shard at its own
    bandwidth, in step with the others)."""
    if gpu.bandwidth_gbs <= 0:
        raise QuantscopeError(f"GPU {gpu.name} has no memory bandwidth in the table: add bandwidth_gbs")
    batch = max(1, batch)
    kv = batch * context * layout.kv_bytes_per_token
    state = batch * 2 * layout.state_bytes_per_sequence  # read and written back every step
    step = weights.weights_read(batch) + kv + state
    bandwidth = gpu.bandwidth_gbs * 1e9
    return Roofline(batch, context, step, bandwidth, batch * bandwidth / step)


# ---- every recipe of a plan on one GPU -------------------------------------------------------


@dataclass(frozen=True)
class RecipeServing:
    """One recipe on the GPU: its `capacity` and the decode roofline at the batch it can hold
    (min(max concurrency, `MAX_NUM_SEQS`) sequences, half the context long on average); None when
    it does not fit or the GPU's bandwidth is unknown."""

    recipe: str
    capacity: Capacity
    roofline: Roofline | None

    def to_dict(self) -> dict[str, Any]:
        data = {"recipe": self.recipe, **self.capacity.to_dict()}
        data["decode_tokens_per_s_upper_bound"] = self.roofline.tokens_per_s if self.roofline else None
        data["decode_batch"] = self.roofline.batch if self.roofline else None
        return data


@dataclass(frozen=True)
class ServingPlan:
    """Every recipe of a `recipe.Plan` served on `gpu_name` (`gpu_bytes` per GPU) with `options`."""

    gpu_name: str
    gpu_bytes: int
    options: ServingOptions
    recipes: tuple[RecipeServing, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu_name,
            "gpu_bytes": self.gpu_bytes,
            "options": asdict(self.options),
            "recipes": [r.to_dict() for r in self.recipes],
            "note": (
                "KV paging follows vLLM 0.32; the engine reserve (activations, CUDA graphs, memory "
                "outside torch) is estimated; decode tokens/s is a bandwidth roofline (an upper bound)"
            ),
        }


# ---- one variant on one GPU: capacity and roofline -------------------------------------------


@dataclass(frozen=True)
class GpuBudget:
    """A GPU as a budget: the card (its bandwidth drives the roofline; None for a bare memory size,
    no roofline), the memory per GPU (bytes), how vLLM is run, the prompt length assumed (tokens)
    and the price (per GPU-hour; None = no cost column). Build one with `GpuBudget.on`."""

    gpu: GPU | None
    gpu_bytes: int
    options: ServingOptions = field(default_factory=ServingOptions)
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    price_per_hour: float | None = None

    @classmethod
    def on(
        cls,
        gpu: GPU | None,
        gpu_bytes: int | None = None,
        options: ServingOptions | None = None,
        prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
        price_per_hour: float | None = None,
    ) -> GpuBudget:
        """The budget of `gpu`, with `gpu_bytes` (bytes per GPU) in place of the table's memory when
        given. Raises QuantscopeError when neither a card nor a size is given."""
        if gpu_bytes is None:
            if gpu is None:
                raise QuantscopeError("a GPU budget needs --gpu (a card from the table) or --gpu-memory")
            gpu_bytes = gpu.memory_bytes
        return cls(gpu, gpu_bytes, options or ServingOptions(), prompt_tokens, price_per_hour)

    def describe(self) -> str:
        name = self.gpu.name if self.gpu is not None else "GPU"
        return f"{name} ({self.gpu_bytes / 1e9:.0f} GB, tp={self.options.tp})"


def mean_context(prompt_tokens: float, completion_tokens: float) -> float:
    """Tokens one sequence holds on average while it decodes (the KV cache each step reads): the
    prompt plus half the completion, which grows by one token a step."""
    return prompt_tokens + completion_tokens / 2


def decode_batch(concurrency: float) -> int:
    """Sequences one decode step runs: as many as the KV pool holds (`concurrency`), never more
    than vLLM schedules at once (`MAX_NUM_SEQS`) nor fewer than one."""
    return max(1, min(int(concurrency), MAX_NUM_SEQS))


@dataclass(frozen=True)
class OnGpu:
    """One variant on a budget's GPU: its `capacity` at `options.context`, the `concurrent`
    sequences of the held length the pool holds at once, and the decode `roofline` at the batch
    they make (None when it does not fit or the budget has no card)."""

    capacity: Capacity
    concurrent: float
    roofline: Roofline | None

    @property
    def decode_tokens_per_s(self) -> float:
        """The roofline's tokens/s, 0 without one."""
        return self.roofline.tokens_per_s if self.roofline is not None else 0.0


def serve_on_gpu(
    budget: GpuBudget,
    config: Mapping[str, Any],
    weight_bytes: int,
    weights: DecodeBytes,
    completion_tokens: float,
    held_tokens: float | None = None,
    where: str = "config",
) -> OnGpu:
    """The one served-on-a-GPU computation (`plan --gpu`, `recommend --gpu`, the report and
    `sweep --dry-run`): a variant of `weight_bytes` in all (`weights` read per decode step) on
    `budget`, for `config`'s cache shape (`where` names it in errors). Concurrency counts sequences
    of `held_tokens` (default: the full `options.context`); the roofline runs at `decode_batch` of
    them, of `mean_context(budget.prompt_tokens, completion_tokens)` tokens on average. A card
    with no bandwidth in the table raises QuantscopeError (from `roofline`)."""
    options = budget.options
    layout = cache_layout(cache_shape(config, where), options)
    held = capacity(weight_bytes, budget.gpu_bytes, layout, engine_reserve(config, tp=options.tp), options)
    concurrent = held.max_concurrency if held_tokens is None else held.concurrency_at(held_tokens)
    if not held.fits or budget.gpu is None:
        return OnGpu(held, concurrent, None)
    context = mean_context(budget.prompt_tokens, completion_tokens)
    return OnGpu(held, concurrent, roofline(weights, layout, budget.gpu, decode_batch(concurrent), context))


def serve_recipes(
    footprints: Iterable[Footprint],
    config: Mapping[str, Any],
    gpu: GPU | None,
    gpu_bytes: int,
    options: ServingOptions,
    where: str = "config",
) -> ServingPlan:
    """`footprints` (recipe.Footprint records) served on one kind of GPU: `gpu` gives the bandwidth
    for the roofline (None, or a card without bandwidth: no roofline); `where` names the config in
    errors. Every sequence is the whole `options.context` (no prompt apart), half of it on average
    while decoding."""
    card = gpu if gpu is not None and gpu.bandwidth_gbs > 0 else None
    budget = GpuBudget.on(card, gpu_bytes, options, prompt_tokens=0)
    rows = []
    for footprint in footprints:
        weights = decode_bytes(footprint.bytes_by_group, config, options.tp)
        served = serve_on_gpu(budget, config, footprint.total_bytes, weights, options.context, where=where)
        rows.append(RecipeServing(footprint.recipe, served.capacity, served.roofline))
    return ServingPlan(gpu.name if gpu else "given", gpu_bytes, options, tuple(rows))


def serving_plan(
    planned: Plan, gpu: str | None, gpu_memory: str | None, context: int, kv_dtype: str, tp: int
) -> ServingPlan | None:
    """The serving side of `plan`: None without --gpu or --gpu-memory."""
    from quantscope.gpus import get_gpu
    from quantscope.util import parse_size

    if gpu is None and gpu_memory is None:
        return None
    card = get_gpu(gpu) if gpu is not None else None
    budget = GpuBudget.on(card, parse_size(gpu_memory) if gpu_memory is not None else None)
    options = ServingOptions(context=context, kv_dtype=kv_dtype, tp=tp)
    where = f"{planned.anatomy.source} (its config)"
    return serve_recipes(planned.footprints, planned.anatomy.config, card, budget.gpu_bytes, options, where)
