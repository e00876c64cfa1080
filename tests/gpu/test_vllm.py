"""vLLM serving a small model on a real NVIDIA GPU, with the runtime role's own command line.

Runs only where `nvidia-smi` finds a GPU and a vLLM venv is available: the venv named by
LLMHOST_VLLM_VENV, else one built here from the pinned lock (`pip install
--require-hashes`, which needs the package index). Elsewhere it is skipped with the reason;
the vLLM unit, env file and install commands are covered per hardware class by
tests/unit/test_runtime_role.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.catalog import model_toml
from llmhost.hardware import load_classes
from llmhost.onhost import runtimectl
from llmhost.runtimes import load_sources
from tests.gpu.support import gpu_missing

pytestmark = pytest.mark.gpu

WORDS = ["hello", "world", "the", "a", "model", "serves", "tokens", "fast", "on", "gpu"]


def gpu_present() -> str | None:
    return gpu_missing("vLLM serving not exercised")


def vllm_venv(tmp_path: Path) -> Path:
    given = os.environ.get("LLMHOST_VLLM_VENV")
    if given:
        return Path(given)
    venv = tmp_path / "vllm"
    pin = load_sources().vllm
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--require-hashes", "--no-deps",
         "--only-binary", ":all:", "-r", str(pin.lock)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if installed.returncode != 0:
        pytest.skip(
            f"could not install vLLM {pin.version} from {pin.lock.name} here (no index?): "
            f"{installed.stderr.strip().splitlines()[-1:]}; set LLMHOST_VLLM_VENV to a venv "
            "built from the lock"
        )
    return venv


def write_small_llama(directory: Path) -> list[Path]:
    """A 2-layer llama (head size 64, which every vLLM attention backend takes) + tokenizer."""
    import numpy as np
    from safetensors.numpy import save_file

    tokens = ["<unk>", "<s>", "</s>", *WORDS]
    hidden, intermediate, heads, layers = 128, 256, 2, 2
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": intermediate,
        "num_attention_heads": heads, "num_key_value_heads": heads,
        "num_hidden_layers": layers, "vocab_size": len(tokens),
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float16",
        "bos_token_id": 1, "eos_token_id": 2,
    }  # fmt: skip
    rng = np.random.default_rng(0)
    weights = {"model.embed_tokens.weight": (len(tokens), hidden), "model.norm.weight": (hidden,),
               "lm_head.weight": (len(tokens), hidden)}  # fmt: skip
    for layer in range(layers):
        p = f"model.layers.{layer}"
        weights |= {
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.post_attention_layernorm.weight": (hidden,),
            **{f"{p}.self_attn.{n}_proj.weight": (hidden, hidden) for n in "qkvo"},
            f"{p}.mlp.gate_proj.weight": (intermediate, hidden),
            f"{p}.mlp.up_proj.weight": (intermediate, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, intermediate),
        }
    tensors = {
        name: (np.ones(shape) if len(shape) == 1 else rng.normal(0, 0.02, shape)).astype(np.float16)
        for name, shape in weights.items()
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    special = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, t in enumerate(tokens[:3])
    ]  # fmt: skip
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(tokens)},
                  "unk_token": "<unk>"},
    }  # fmt: skip
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
            }
        )
    )
    names = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    return [Path(name) for name in names]


def test_vllm_serves_a_small_model_with_the_runtime_roles_arguments(tmp_path: Path):
    reason = gpu_present()
    if reason:
        pytest.skip(reason)
    from llmhost.catalog import load_model
    from roles.runtime.engines import OFFLINE_ENVIRONMENT, vllm_release

    venv = vllm_venv(tmp_path)
    weights = tmp_path / "weights"
    files = write_small_llama(weights)
    definition = tmp_path / "small.toml"
    definition.write_text(
        model_toml(
            "small",
            "safetensors",
            {"kind": "local", "path": str(weights)},
            [(str(f), weights / f) for f in files],
        ).replace(
            'repository = "models/small"',
            f'repository = "models/small"\ndigest = "sha256:{"0" * 64}"',
        )
    )
    model = load_model(definition)
    gpu_class = next(c for c in load_classes().values() if c.vllm and c.gpu_count == 1)
    release = vllm_release(model, gpu_class, load_sources().vllm.version, "small", [])
    # The role serves /var/lib/llmhost/models/<name>@<digest>; here the weights are local.
    arguments = [str(weights) if a.startswith("/var/lib/llmhost/models/") else a
                 for a in release.command_line(18001)]  # fmt: skip
    arguments[arguments.index("--max-model-len") + 1] = "256"
    arguments[arguments.index("--gpu-memory-utilization") + 1] = "0.3"
    env = {**os.environ, **OFFLINE_ENVIRONMENT, "HOME": str(tmp_path)}
    log = (tmp_path / "vllm.log").open("w")
    server = subprocess.Popen(
        [str(venv / "bin" / "vllm"), *arguments], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    try:
        seconds = runtimectl.wait_ready("http://127.0.0.1:18001", "small", deadline_s=600)
        print(f"vLLM ready in {seconds:.0f} s on {gpu_class.gpu_model}-class arguments")
        assert server.poll() is None
    except runtimectl.NotReady as error:
        pytest.fail(f"{error}\n{(tmp_path / 'vllm.log').read_text()[-3000:]}")
    finally:
        server.terminate()
        server.wait(timeout=60)
