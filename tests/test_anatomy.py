"""Anatomy: every tensor of real tiny checkpoints classified, bytes from headers only, fused sets."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from quantscope.checkpoint.anatomy import GROUPS, classify_tensor, find_fused_sets
from quantscope.checkpoint.load import load_anatomy
from quantscope.errors import QuantscopeError
from tests.header_only import write_checkpoint, write_header_only_shard

# An oracle independent of the classifier's rules: the first matching substring names the group.
_ORACLE = (
    ("lm_head.", "lm_head"),
    ("embed_tokens.", "embed"),
    (".linear_attn.", "linear_attn"),
    (".self_attn.", "full_attn"),
    (".shared_expert_gate.", "shared_expert_gate"),
    (".shared_expert.", "shared_expert"),
    (".experts.", "routed_experts"),
    (".mlp.gate.", "router"),
    (".mlp.", "dense_mlp"),
    ("norm.weight", "norm"),
)


def _oracle(name: str) -> str:
    return next(group for needle, group in _ORACLE if needle in name)


def _real_tensor_bytes(path: Path) -> dict[str, int]:
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name).nbytes for name in handle.keys()}  # noqa: SIM118


@pytest.mark.parametrize("fixture", ["tiny_qwen35_dir", "tiny_qwen35_moe_dir", "tiny_qwen3_dir"])
def test_every_tensor_classified_and_sized_like_the_real_file(fixture: str, request: pytest.FixtureRequest):
    directory = request.getfixturevalue(fixture)
    anatomy = load_anatomy(directory)
    real = _real_tensor_bytes(directory / "model.safetensors")

    assert {t.name for t in anatomy.tensors} == set(real)
    for tensor in anatomy.tensors:
        assert tensor.group == _oracle(tensor.name), tensor.name
        assert tensor.nbytes == real[tensor.name], tensor.name
    assert anatomy.unknown == ()
    with (directory / "model.safetensors").open("rb") as handle:
        header_len = struct.unpack("<Q", handle.read(8))[0]
    assert anatomy.total_bytes == (directory / "model.safetensors").stat().st_size - 8 - header_len


def test_qwen35_moe_groups_and_fused_sets(tiny_qwen35_moe_dir: Path):
    anatomy = load_anatomy(tiny_qwen35_moe_dir)
    groups = {group: len(tensors) for group, tensors in anatomy.by_group().items()}
    assert set(groups) == set(GROUPS)
    # 4 layers × 4 experts × (gate, up, down); one router / shared-expert gate per layer.
    assert groups["routed_experts"] == 48
    assert groups["router"] == groups["shared_expert_gate"] == 4
    assert groups["shared_expert"] == 12
    assert anatomy.model_type == "qwen3_5_moe_text"

    names = {fused.name: fused.members for fused in anatomy.fused_sets}
    assert len(names["model.layers.0.mlp.experts"]) == 12  # all experts of a layer: one FusedMoE
    assert names["model.layers.0.mlp.shared_expert.gate_up_proj"] == (
        "model.layers.0.mlp.shared_expert.gate_proj",
        "model.layers.0.mlp.shared_expert.up_proj",
    )
    assert names["model.layers.0.linear_attn.in_proj_qkvz"] == (
        "model.layers.0.linear_attn.in_proj_qkv",
        "model.layers.0.linear_attn.in_proj_z",
    )
    assert names["model.layers.0.linear_attn.in_proj_ba"] == (
        "model.layers.0.linear_attn.in_proj_b",
        "model.layers.0.linear_attn.in_proj_a",
    )
    full_layer = next(t.layer for t in anatomy.tensors if t.group == "full_attn")
    assert f"model.layers.{full_layer}.self_attn.qkv_proj" in names
    # conv1d, A_log, norms are not linear weights; the router is (it stays 16-bit by recipe rule).
    linear = anatomy.linear_weights
    assert "model.layers.0.linear_attn.conv1d" not in linear
    assert "model.layers.0.mlp.gate" in linear
    assert not any("norm" in module for module in linear)


def test_qwen3_fused_sets(tiny_qwen3_dir: Path):
    anatomy = load_anatomy(tiny_qwen3_dir)
    assert [f.name for f in anatomy.fused_sets] == [
        "model.layers.0.mlp.gate_up_proj",
        "model.layers.0.self_attn.qkv_proj",
        "model.layers.1.mlp.gate_up_proj",
        "model.layers.1.self_attn.qkv_proj",
    ]
    assert anatomy.fused_set_of("model.layers.1.self_attn.k_proj").name == "model.layers.1.self_attn.qkv_proj"
    assert anatomy.fused_set_of("model.layers.1.self_attn.o_proj") is None


def _multimodal_checkpoint(source: Path, target: Path) -> Path:
    """The tiny MoE as a real multimodal Qwen3.5 checkpoint stores it: `model.language_model.`
    prefix, fused 3-D experts, a vision tower, an MTP layer, and one tensor nobody knows."""
    target.mkdir()
    with safe_open(str(source / "model.safetensors"), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if ".experts." in name:
            continue
        out[name.replace("model.", "model.language_model.", 1) if name.startswith("model.") else name] = (
            tensor
        )
    for layer in range(4):
        prefix = f"model.layers.{layer}.mlp.experts"
        gate_up = [
            torch.cat([tensors[f"{prefix}.{e}.gate_proj.weight"], tensors[f"{prefix}.{e}.up_proj.weight"]])
            for e in range(4)
        ]
        down = [tensors[f"{prefix}.{e}.down_proj.weight"] for e in range(4)]
        out[f"model.language_model.layers.{layer}.mlp.experts.gate_up_proj"] = torch.stack(gate_up)
        out[f"model.language_model.layers.{layer}.mlp.experts.down_proj"] = torch.stack(down)
    bf16 = torch.bfloat16
    out["model.visual.blocks.0.attn.qkv.weight"] = torch.zeros(96, 32, dtype=bf16)
    out["model.visual.blocks.0.mlp.linear_fc1.weight"] = torch.zeros(64, 32, dtype=bf16)
    out["model.visual.patch_embed.proj.weight"] = torch.zeros(32, 3, 2, 4, 4, dtype=bf16)
    out["mtp.fc.weight"] = torch.zeros(128, 256, dtype=bf16)
    out["mtp.pre_fc_norm_hidden.weight"] = torch.zeros(128, dtype=bf16)
    out["mtp.layers.0.self_attn.q_proj.weight"] = torch.zeros(256, 128, dtype=bf16)
    out["mtp.layers.0.mlp.experts.0.gate_proj.weight"] = torch.zeros(128, 128, dtype=bf16)
    out["model.language_model.layers.0.mystery_adapter.weight"] = torch.zeros(8, 128, dtype=bf16)
    save_file(out, str(target / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({"model_type": "qwen3_5_moe", "text_config": config}))
    return target


def test_multimodal_prefixes_fused_experts_mtp_vision_and_unknown(tiny_qwen35_moe_dir: Path, tmp_path: Path):
    anatomy = load_anatomy(_multimodal_checkpoint(tiny_qwen35_moe_dir, tmp_path / "mm"))
    group = {t.name: t.group for t in anatomy.tensors}
    assert group["model.language_model.layers.0.linear_attn.in_proj_qkv.weight"] == "linear_attn"
    assert group["model.language_model.layers.0.mlp.experts.gate_up_proj"] == "routed_experts"
    assert group["model.language_model.layers.0.mlp.gate.weight"] == "router"
    assert group["model.language_model.embed_tokens.weight"] == "embed"
    assert group["model.visual.blocks.0.attn.qkv.weight"] == "vision"
    assert group["model.visual.patch_embed.proj.weight"] == "vision"
    assert group["mtp.fc.weight"] == group["mtp.layers.0.self_attn.q_proj.weight"] == "mtp"
    assert [t.name for t in anatomy.unknown] == ["model.language_model.layers.0.mystery_adapter.weight"]
    assert anatomy.model_type == "qwen3_5_moe"

    gate_up = anatomy.tensor("model.language_model.layers.0.mlp.experts.gate_up_proj")
    assert gate_up.is_linear_weight and gate_up.shape == (4, 256, 128)
    assert anatomy.weight_shape(gate_up) == (4, 256, 128)  # [experts, out=2I, in=H]
    experts = {f.name: f.members for f in anatomy.fused_sets}["model.language_model.layers.0.mlp.experts"]
    assert set(experts) == {
        "model.language_model.layers.0.mlp.experts.gate_up_proj",
        "model.language_model.layers.0.mlp.experts.down_proj",
    }


def test_transposed_fused_experts_are_read_as_out_by_in(tmp_path: Path):
    # Qwen3-VL-MoE stores gate_up_proj as [E, H, 2I] and down_proj as [E, I, H].
    shard = tmp_path / "model.safetensors"
    write_header_only_shard(
        shard,
        [
            ("model.layers.0.mlp.experts.gate_up_proj", (8, 64, 96)),
            ("model.layers.0.mlp.experts.down_proj", (8, 48, 64)),
        ],
    )
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl_moe", "hidden_size": 64}))
    anatomy = load_anatomy(tmp_path)
    assert anatomy.weight_shape(anatomy.tensor("model.layers.0.mlp.experts.gate_up_proj")) == (8, 96, 64)
    assert anatomy.weight_shape(anatomy.tensor("model.layers.0.mlp.experts.down_proj")) == (8, 64, 48)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("model.layers.3.self_attn.q_proj.weight", "full_attn"),
        ("model.layers.3.mlp.gate_proj.weight", "dense_mlp"),
        ("model.embed_tokens.weight", "embed"),
        ("lm_head.weight", "lm_head"),
        ("model.norm.weight", "norm"),
        ("model.layers.2.block_sparse_moe.gate.weight", "router"),
        ("model.layers.2.block_sparse_moe.experts.7.w1.weight", "routed_experts"),
        ("model.layers.2.mlp.shared_experts.down_proj.weight", "shared_expert"),
        ("model.layers.2.mlp.gate.e_score_correction_bias", "router"),
        ("model.layers.0.self_attn.k_proj.qweight", "full_attn"),
        ("something.completely.else", "other"),
    ],
)
def test_classify_llama_mixtral_deepseek_names(name: str, group: str):
    assert classify_tensor(name) == group


def test_deepseek_mtp_layers_after_the_stack():
    config = {"num_hidden_layers": 61, "num_nextn_predict_layers": 1}
    assert classify_tensor("model.layers.61.eh_proj.weight", config) == "mtp"
    assert classify_tensor("model.layers.60.mlp.experts.0.up_proj.weight", config) == "routed_experts"


def test_find_fused_sets_needs_two_members():
    assert find_fused_sets(["a.self_attn.q_proj", "a.self_attn.o_proj", "a.mlp.up_proj"]) == ()


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    original = pathlib.Path.open

    def counting_open(self: Path, *args, **kwargs):
        handle = original(self, *args, **kwargs)
        if self.suffix != ".safetensors":
            return handle
        read = handle.read

        def counted(size: int = -1) -> bytes:
            data = read(size)
            reads.append(len(data))
            return data

        handle.read = counted
        return handle

    monkeypatch.setattr(pathlib.Path, "open", counting_open)
    return reads


def test_headers_only_397b_index_reads_no_weight_bytes(tmp_path: Path, monkeypatch):
    directory = write_checkpoint(tmp_path / "q397")
    shards = sorted(directory.glob("*.safetensors"))
    header_bytes = sum(shard.stat().st_size for shard in shards)  # the files hold nothing else
    reads = _count_reads(monkeypatch)

    anatomy = load_anatomy(directory)

    assert sum(reads) == header_bytes
    assert anatomy.total_params > 390e9 and anatomy.total_bytes == 2 * anatomy.total_params
    groups = anatomy.by_group()
    assert len(groups["routed_experts"]) == 60 * 512 * 3
    assert {t.group for t in anatomy.tensors if t.name.startswith("mtp.")} == {"mtp"}
    assert len(groups["vision"]) > 300 and anatomy.unknown == ()
    # per layer: experts + shared gate/up; 45 GDN layers: qkvz + ba; 15 full: qkv; MTP: 3 more.
    assert len(anatomy.fused_sets) == 60 * 2 + 45 * 2 + 15 + 3
    # How long this takes is measured by benchmarks/anatomy_headers.py, not asserted here.


def test_load_errors_name_the_file(tmp_path: Path):
    with pytest.raises(QuantscopeError, match=r"no \*\.safetensors"):
        load_anatomy(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(QuantscopeError, match=r"model\.safetensors.*not valid JSON"):
        load_anatomy(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "gone.safetensors"}})
    )
    with pytest.raises(QuantscopeError, match=r"gone\.safetensors"):
        load_anatomy(tmp_path)
    with pytest.raises(QuantscopeError, match="no such file"):
        load_anatomy(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# The hub path, offline: a local server speaking the Hugging Face resolve/range protocol.
# ---------------------------------------------------------------------------------------------

_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_handler(root: Path, requests: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _file(self) -> Path | None:
            # /{org}/{repo}/resolve/{revision}/{filename}
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return None
            path = root / "/".join(parts[4:])
            return path if path.is_file() else None

        def _send_head(self, path: Path | None, body_len: int, status: int = 200) -> None:
            if path is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(status)
            self.send_header("ETag", f'"{hashlib.sha1(path.read_bytes()).hexdigest()}"')
            self.send_header("X-Repo-Commit", _COMMIT)
            self.send_header("Content-Length", str(body_len))
            self.end_headers()

        def do_HEAD(self) -> None:
            path = self._file()
            requests.append(f"HEAD {self.path}")
            self._send_head(path, path.stat().st_size if path else 0)

        def do_GET(self) -> None:
            path = self._file()
            wanted = self.headers.get("Range")
            requests.append(f"GET {self.path} {wanted}")
            if path is None:
                self._send_head(None, 0)
                return
            data = path.read_bytes()
            if wanted:
                start, end = (int(x) for x in wanted.split("=")[1].split("-"))
                data = data[start : end + 1]
            self._send_head(path, len(data), 206 if wanted else 200)
            self.wfile.write(data)

    return Handler


@pytest.fixture
def fake_hub(tmp_path: Path):
    """(repo dir, request log, env) for a local hub; the env points huggingface_hub at it."""
    root = tmp_path / "hub_repo"
    root.mkdir()
    requests: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _hub_handler(root, requests))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    yield root, requests, env
    server.shutdown()
    server.server_close()


def _inspect_json(model: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A subprocess, because huggingface_hub reads HF_ENDPOINT once, at import.
    command = [sys.executable, "-m", "quantscope.cli", "inspect", model, "--json", "--tensors"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_hub_id_reads_config_and_headers_by_range_requests(fake_hub):
    root, requests, env = fake_hub
    shards = [
        [("model.embed_tokens.weight", (256, 128)), ("model.layers.0.self_attn.q_proj.weight", (128, 128))],
        [("model.layers.0.self_attn.k_proj.weight", (64, 128)), ("lm_head.weight", (256, 128))],
    ]
    weight_map = {}
    for index, entries in enumerate(shards):
        name = f"model-{index + 1:05d}-of-00002.safetensors"
        save_file({n: torch.zeros(s, dtype=torch.bfloat16) for n, s in entries}, str(root / name))
        weight_map.update({n: name for n, _ in entries})
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({"model_type": "qwen3", "num_hidden_layers": 1}))

    result = _inspect_json("someorg/tiny-model", env)

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == "someorg/tiny-model" and data["model_type"] == "qwen3"
    assert {t["name"]: t["group"] for t in data["tensors"]} == {
        "model.embed_tokens.weight": "embed",
        "model.layers.0.self_attn.q_proj.weight": "full_attn",
        "model.layers.0.self_attn.k_proj.weight": "full_attn",
        "lm_head.weight": "lm_head",
    }
    assert data["groups"]["lm_head"]["bytes"] == 256 * 128 * 2
    shard_gets = [r for r in requests if r.startswith("GET") and ".safetensors " in r]
    assert len(shard_gets) >= 2 and all("bytes=" in r for r in shard_gets)  # headers by range only


def test_hub_id_that_does_not_exist_is_a_clear_error(fake_hub):
    _, _, env = fake_hub
    result = _inspect_json("someorg/missing", env)
    assert result.returncode == 2
    assert "someorg/missing" in result.stderr and "Traceback" not in result.stderr
