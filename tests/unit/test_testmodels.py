import json
import subprocess
import sys

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from llmhost.testing.testmodels import (
    TINY_GGUF_NAME,
    sha256_file,
    tiny_vocab,
    write_tiny_gguf,
    write_tiny_safetensors_model,
)

LAYER_TENSORS = (
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
)  # fmt: skip


def _field(reader, key):
    return reader.fields[key].contents()


def _digests(directory, relative_paths):
    return {str(p): sha256_file(directory / p) for p in relative_paths}


def test_tiny_gguf_is_byte_identical_across_runs(tmp_path):
    first = write_tiny_gguf(tmp_path / "a" / "tiny.gguf")
    second = write_tiny_gguf(tmp_path / "b" / "tiny.gguf")
    assert sha256_file(first) == sha256_file(second)
    assert not list(tmp_path.rglob("*.partial"))


def test_the_seed_changes_the_weights(tmp_path):
    assert sha256_file(write_tiny_gguf(tmp_path / "a.gguf", seed=0)) != sha256_file(
        write_tiny_gguf(tmp_path / "b.gguf", seed=1)
    )


def test_tiny_gguf_reads_back_as_a_llama_model(tmp_path):
    reader = gguf.GGUFReader(write_tiny_gguf(tmp_path / "tiny.gguf"))
    tokens, _, _ = tiny_vocab()

    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "general.name") == TINY_GGUF_NAME
    assert _field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32
    assert _field(reader, "llama.embedding_length") == 64
    assert _field(reader, "llama.block_count") == 2
    assert _field(reader, "llama.attention.head_count") == 4
    assert _field(reader, "llama.attention.head_count_kv") == 4
    assert _field(reader, "llama.rope.dimension_count") == 16
    assert _field(reader, "llama.context_length") == 256
    assert _field(reader, "llama.vocab_size") == len(tokens)

    assert _field(reader, "tokenizer.ggml.model") == "llama"
    assert _field(reader, "tokenizer.ggml.tokens") == tokens
    assert len(set(tokens)) == len(tokens)
    assert tokens[:4] == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert tokens[258] == "<0xFF>"
    types = _field(reader, "tokenizer.ggml.token_type")
    assert types.count(gguf.TokenType.BYTE) == 256
    assert len(_field(reader, "tokenizer.ggml.scores")) == len(tokens)
    assert _field(reader, "tokenizer.ggml.unknown_token_id") == 0
    assert _field(reader, "tokenizer.ggml.bos_token_id") == 1
    assert _field(reader, "tokenizer.ggml.eos_token_id") == 2

    expected = ["token_embd.weight", "output_norm.weight", "output.weight"] + [
        f"blk.{b}.{t}.weight" for b in range(2) for t in LAYER_TENSORS
    ]
    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors) == expected
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)
    # ggml shapes are numpy's reversed: {n_embd, n_vocab} for the embeddings.
    assert list(tensors["token_embd.weight"].shape) == [64, len(tokens)]
    assert list(tensors["blk.0.ffn_down.weight"].shape) == [256, 64]
    assert list(tensors["blk.1.attn_k.weight"].shape) == [64, 64]
    assert np.all(tensors["output_norm.weight"].data == 1.0)
    assert np.isfinite(tensors["output.weight"].data).all()


def test_tiny_gguf_steers_generation_to_ordinary_tokens(tmp_path):
    reader = gguf.GGUFReader(write_tiny_gguf(tmp_path / "tiny.gguf"))
    tensors = {t.name: t.data for t in reader.tensors}
    first_normal = 3 + 256
    # Dimension 0 is a constant feature that only the output matrix reads ...
    assert np.all(tensors["token_embd.weight"][:, 0] == 1.0)
    assert np.all(tensors["blk.1.attn_output.weight"][0] == 0.0)
    assert np.all(tensors["blk.1.ffn_down.weight"][0] == 0.0)
    # ... as a lead for ordinary tokens over control and byte tokens.
    assert np.all(tensors["output.weight"][:first_normal, 0] < 0)
    assert np.all(tensors["output.weight"][first_normal:, 0] > 0)


def test_gguf_size_knobs_scale_the_model(tmp_path):
    small = write_tiny_gguf(tmp_path / "small.gguf")
    large = write_tiny_gguf(
        tmp_path / "large.gguf", embedding=128, blocks=3, kv_heads=2, name="llmhost-load"
    )
    reader = gguf.GGUFReader(large)
    assert _field(reader, "general.name") == "llmhost-load"
    assert _field(reader, "llama.block_count") == 3
    assert _field(reader, "llama.attention.head_count_kv") == 2
    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors["blk.2.attn_v.weight"].shape) == [128, 64]
    assert large.stat().st_size > 4 * small.stat().st_size


def test_gguf_refuses_heads_that_do_not_divide_the_embedding(tmp_path):
    with pytest.raises(ValueError, match="heads"):
        write_tiny_gguf(tmp_path / "bad.gguf", embedding=64, heads=3)


def test_safetensors_model_is_byte_identical_and_loads(tmp_path):
    files = write_tiny_safetensors_model(tmp_path / "a")
    again = write_tiny_safetensors_model(tmp_path / "b")
    assert [str(p) for p in files] == [
        "config.json",
        "model.safetensors",
        "tokenizer/vocab.txt",
        "tokenizer_config.json",
    ]
    assert files == again
    assert _digests(tmp_path / "a", files) == _digests(tmp_path / "b", again)

    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["model_type"] == "llama"
    tensors = load_file(tmp_path / "a" / "model.safetensors")
    assert tensors["model.embed_tokens.weight"].shape == (
        config["vocab_size"],
        config["hidden_size"],
    )
    assert all(t.dtype == np.float32 for t in tensors.values())
    vocab = (tmp_path / "a" / "tokenizer" / "vocab.txt").read_text().splitlines()
    assert len(vocab) == config["vocab_size"]


def test_models_are_identical_from_another_process(tmp_path):
    """A fresh interpreter (new hash seed) writes the same bytes as this one."""
    script = (
        "import sys; from pathlib import Path; from llmhost.testing import testmodels as t; "
        "d = Path(sys.argv[1]); t.write_tiny_gguf(d / 'tiny.gguf'); "
        "t.write_tiny_safetensors_model(d / 'st')"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "child")], check=True)
    write_tiny_gguf(tmp_path / "here" / "tiny.gguf")
    files = write_tiny_safetensors_model(tmp_path / "here" / "st")
    for name in ["tiny.gguf", *(f"st/{p}" for p in files)]:
        assert sha256_file(tmp_path / "child" / name) == sha256_file(tmp_path / "here" / name)
