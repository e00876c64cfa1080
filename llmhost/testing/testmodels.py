"""Deterministic tiny models for tests: a llama GGUF and a Hugging Face-style directory.

Tests that download, verify, cache or serve a model need real model files, but
the test machines cannot reach a model hub, and real models are gigabytes. These
writers produce small files in the real formats instead, and they are
byte-identical on every run for the same arguments (a seeded numpy generator,
fixed metadata, no timestamps, fixed key and tensor order), so a test can pin a
checksum the way a deployment pins a revision.

The GGUF follows llama.cpp's conventions for the ``llama`` architecture closely
enough for ``llama-server`` to load it and generate (noise) text; the sizes can
be scaled up through ``embedding`` and ``blocks`` when a load test wants a file
of a few hundred megabytes.

numpy, gguf and safetensors are development extras, so they are imported where
they are used: importing this module (say, for ``sha256_file``) works on a
production install.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

TINY_GGUF_NAME = "llmhost-tiny"
"""Default ``general.name`` of the tiny GGUF; a load test can pass its own."""

_CHUNK = 1 << 20

# SentencePiece marks a word boundary with U+2581; llama.cpp's "llama" (SPM)
# tokenizer expects it in the vocabulary.
_SPACE = "\u2581"
# A few ordinary tokens, best (highest score) first: single characters, then
# merges that SPM builds out of pairs already present, highest score first
# ("▁h" + "el" -> "▁hel", + "lo" -> "▁hello"; "▁t" + "he" -> "▁the"), so a
# prompt such as "hello the" becomes whole-word tokens rather than raw bytes.
_NORMAL_TOKENS: tuple[str, ...] = (
    _SPACE,
    *"etaoinshrdlcumwfgypbvkjxqz",
    *".,!?",
    f"{_SPACE}h",
    "el",
    "lo",
    f"{_SPACE}hel",
    f"{_SPACE}hello",
    f"{_SPACE}t",
    "he",
    f"{_SPACE}the",
    "in",
    "er",
    "an",
    "on",
    "re",
    "nd",
    f"{_SPACE}a",
    f"{_SPACE}an",
    f"{_SPACE}and",
    f"{_SPACE}o",
    f"{_SPACE}of",
)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-gigabyte weights fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of the tiny GGUF's SPM vocabulary.

    The layout mirrors a real llama vocabulary: ``<unk>``, ``<s>``, ``</s>``
    (ids 0, 1, 2), then the 256 byte-fallback tokens ``<0x00>``..``<0xFF>`` that
    let SPM encode any text, then a handful of ordinary tokens.
    """
    from gguf import TokenType

    tokens = ["<unk>", "<s>", "</s>"]
    scores = [0.0, 0.0, 0.0]
    types = [int(TokenType.UNKNOWN), int(TokenType.CONTROL), int(TokenType.CONTROL)]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(int(TokenType.BYTE))
    for rank, token in enumerate(_NORMAL_TOKENS):
        tokens.append(token)
        scores.append(-float(rank))
        types.append(int(TokenType.NORMAL))
    return tokens, scores, types


def _llama_tensor_shapes(
    *, n_vocab: int, embedding: int, blocks: int, heads: int, kv_heads: int, feed_forward: int
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Names and numpy shapes of a llama model's tensors, in llama.cpp's order.

    Numpy shapes are the reverse of ggml's: gguf writes dimensions innermost
    first, so llama.cpp's ``token_embd`` of ``{n_embd, n_vocab}`` is the numpy
    array ``(n_vocab, n_embd)``, the same layout as a PyTorch ``Linear`` weight
    ``(out_features, in_features)``.
    """
    from gguf import MODEL_TENSOR, TENSOR_NAMES

    def name(tensor: MODEL_TENSOR, bid: int | None = None) -> str:
        return TENSOR_NAMES[tensor].format(bid=bid) + ".weight"

    head_dim = embedding // heads
    yield name(MODEL_TENSOR.TOKEN_EMBD), (n_vocab, embedding)
    yield name(MODEL_TENSOR.OUTPUT_NORM), (embedding,)
    yield name(MODEL_TENSOR.OUTPUT), (n_vocab, embedding)
    for bid in range(blocks):
        yield name(MODEL_TENSOR.ATTN_NORM, bid), (embedding,)
        yield name(MODEL_TENSOR.ATTN_Q, bid), (heads * head_dim, embedding)
        yield name(MODEL_TENSOR.ATTN_K, bid), (kv_heads * head_dim, embedding)
        yield name(MODEL_TENSOR.ATTN_V, bid), (kv_heads * head_dim, embedding)
        yield name(MODEL_TENSOR.ATTN_OUT, bid), (embedding, heads * head_dim)
        yield name(MODEL_TENSOR.FFN_NORM, bid), (embedding,)
        yield name(MODEL_TENSOR.FFN_GATE, bid), (feed_forward, embedding)
        yield name(MODEL_TENSOR.FFN_UP, bid), (feed_forward, embedding)
        yield name(MODEL_TENSOR.FFN_DOWN, bid), (embedding, feed_forward)


def _weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """Deterministic float32 weights: ones for norms, small noise for matrices.

    RMS-norm weights of one keep activations finite; a standard deviation of
    0.02 (the usual llama initialisation) keeps the logits tame.
    """
    import numpy as np

    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32)
    values: np.ndarray[Any, Any] = rng.standard_normal(shape, dtype=np.float32)
    values *= np.float32(0.02)
    return values


_WORD_BIAS = 4.0


def _steer_to_words(name: str, values: np.ndarray[Any, Any], *, first_normal: int) -> None:
    """Make ordinary tokens win every sampling step, in place.

    Noise weights alone would often pick ``</s>`` (an empty completion) or a
    lone byte token (invalid UTF-8, which llama-server holds back), so an
    endpoint test could not count on getting text. Dimension 0 of the residual
    stream is made a constant bias feature instead: every token embeds a 1
    there, no attention or feed-forward output writes to it, and the output
    matrix reads it as a large positive logit for ordinary tokens and a
    negative one for control and byte tokens. After RMS normalisation the
    feature stays positive, so even a greedy sampler emits words and
    punctuation until ``max_tokens``; it never stops on its own.
    """
    if name == "token_embd.weight":
        values[:, 0] = 1.0
    elif name.endswith((".attn_output.weight", ".ffn_down.weight")):
        values[0, :] = 0.0
    elif name == "output.weight":
        values[:first_normal, 0] = -_WORD_BIAS
        values[first_normal:, 0] = _WORD_BIAS


def write_tiny_gguf(
    path: Path,
    *,
    embedding: int = 64,
    blocks: int = 2,
    heads: int = 4,
    seed: int = 0,
    kv_heads: int | None = None,
    feed_forward: int | None = None,
    context_length: int = 256,
    name: str = TINY_GGUF_NAME,
) -> Path:
    """Write a small f32 llama GGUF that llama.cpp's ``llama-server`` can load.

    Its weights are noise, steered so that generation yields ordinary word and
    punctuation tokens and never ``</s>``: a completion always runs to its
    ``max_tokens`` (so set one), deterministic for a fixed sampler seed.

    The defaults give a file under a megabyte. For a load test, scale
    ``embedding`` and ``blocks``: the size is about
    ``4 * blocks * (2 * embedding**2 + 3 * embedding * feed_forward)`` bytes plus
    the two embedding matrices (``embedding=1024, blocks=8`` is about 540 MB),
    and tensors are generated and written one at a time, so memory stays at one
    tensor. ``feed_forward`` defaults to ``4 * embedding`` and ``kv_heads`` to
    ``heads`` (no grouped-query attention). Give a load-test model its own
    ``name`` so it is not mistaken for the tiny one.

    The file is written beside ``path`` and renamed into place, so a reader (or
    a server serving the directory) never sees half a model.
    """
    import gguf
    import numpy as np

    kv_heads = heads if kv_heads is None else kv_heads
    feed_forward = 4 * embedding if feed_forward is None else feed_forward
    if min(embedding, blocks, heads, kv_heads, feed_forward, context_length) < 1:
        raise ValueError(
            "embedding, blocks, heads, kv_heads, feed_forward, context_length must be >= 1"
        )
    if embedding % heads or (embedding // heads) % 2:
        raise ValueError(
            f"embedding {embedding} must split into {heads} heads of an even width (RoPE)"
        )
    if heads % kv_heads:
        raise ValueError(f"heads {heads} must be a multiple of kv_heads {kv_heads}")

    tokens, scores, types = tiny_vocab()
    shapes = list(
        _llama_tensor_shapes(
            n_vocab=len(tokens),
            embedding=embedding,
            blocks=blocks,
            heads=heads,
            kv_heads=kv_heads,
            feed_forward=feed_forward,
        )
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, "llama")
    try:
        writer.add_name(name)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_vocab_size(len(tokens))
        writer.add_context_length(context_length)
        writer.add_embedding_length(embedding)
        writer.add_block_count(blocks)
        writer.add_feed_forward_length(feed_forward)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_dimension_count(embedding // heads)
        writer.add_rope_freq_base(10000.0)
        writer.add_layer_norm_rms_eps(1e-5)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)

        f32 = np.dtype(np.float32)
        for tensor_name, shape in shapes:
            writer.add_tensor_info(tensor_name, shape, f32, int(np.prod(shape)) * f32.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        # One tensor in memory at a time, drawn in a fixed order from one seeded
        # generator: the bytes depend only on the arguments.
        rng = np.random.default_rng(seed)
        first_normal = types.index(int(gguf.TokenType.NORMAL))
        for tensor_name, shape in shapes:
            values = _weights(rng, shape)
            _steer_to_words(tensor_name, values, first_normal=first_normal)
            writer.write_tensor_data(values)
    finally:
        writer.close()
    os.replace(partial, path)
    return path


def _json_bytes(value: Any) -> bytes:
    """Stable JSON: sorted keys, fixed indent, trailing newline, UTF-8."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_tiny_safetensors_model(directory: Path, *, seed: int = 0) -> list[Path]:
    """Write a tiny Hugging Face-style llama checkpoint into ``directory``.

    The files are ``config.json``, ``model.safetensors`` (a complete one-layer
    llama in f32), ``tokenizer_config.json`` and ``tokenizer/vocab.txt``; the
    last sits in a subdirectory so downloads, caches and checksums are exercised
    on nested paths, which real repositories have. Returns the written files
    relative to ``directory`` as sorted POSIX-style paths.
    """
    import numpy as np
    from safetensors.numpy import save_file

    tokens = ["<unk>", "<s>", "</s>", *_NORMAL_TOKENS]
    hidden, intermediate, heads, layers = 16, 32, 2, 1
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "num_hidden_layers": layers,
        "vocab_size": len(tokens),
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (len(tokens), hidden)}
    for layer in range(layers):
        prefix = f"model.layers.{layer}"
        shapes |= {
            f"{prefix}.input_layernorm.weight": (hidden,),
            f"{prefix}.self_attn.q_proj.weight": (hidden, hidden),
            f"{prefix}.self_attn.k_proj.weight": (hidden, hidden),
            f"{prefix}.self_attn.v_proj.weight": (hidden, hidden),
            f"{prefix}.self_attn.o_proj.weight": (hidden, hidden),
            f"{prefix}.post_attention_layernorm.weight": (hidden,),
            f"{prefix}.mlp.gate_proj.weight": (intermediate, hidden),
            f"{prefix}.mlp.up_proj.weight": (intermediate, hidden),
            f"{prefix}.mlp.down_proj.weight": (hidden, intermediate),
        }
    shapes |= {"model.norm.weight": (hidden,), "lm_head.weight": (len(tokens), hidden)}
    rng = np.random.default_rng(seed)
    tensors = {tensor: _weights(rng, shape) for tensor, shape in shapes.items()}

    tokenizer_config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 64,
        "tokenizer_class": "LlamaTokenizer",
        "vocab_file": "tokenizer/vocab.txt",
    }

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer").mkdir(exist_ok=True)
    (directory / "config.json").write_bytes(_json_bytes(config))
    (directory / "tokenizer_config.json").write_bytes(_json_bytes(tokenizer_config))
    (directory / "tokenizer" / "vocab.txt").write_bytes("".join(f"{t}\n" for t in tokens).encode())
    # One metadata key only: safetensors keeps the metadata in a hash map, so
    # several keys could be serialised in a different order from run to run.
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})

    written = ["config.json", "model.safetensors", "tokenizer/vocab.txt", "tokenizer_config.json"]
    return [Path(p) for p in sorted(written)]
