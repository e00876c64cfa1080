"""The model catalog: model files parsed, validated with the key named, and mirrors recorded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmhost.catalog import find, load_catalog, load_model, record_mirror
from llmhost.errors import ConfigError

SHA_A = "a" * 64
SHA_B = "b" * 64
DIGEST = "sha256:" + "c" * 64
NEW_DIGEST = "sha256:" + "d" * 64
REVISION = "0123456789abcdef0123456789abcdef01234567"

GGUF_LOCAL = f"""\
# A tiny GGUF model, served from a local directory.
name = "tiny"
format = "gguf"
license = "apache-2.0"
min_hardware = "cpu"
runtimes = ["llama.cpp"]
eval_set = "evals/tiny.jsonl"

[source]
kind = "local"
path = "/srv/weights/tiny"

[[files]]
path = "tiny.gguf"
size = 1000
sha256 = "{SHA_A}"

[oci]
repository = "models/tiny"
"""

SAFETENSORS_HF = f"""\
name = "small-st"
format = "safetensors"
license = "mit"
min_hardware = "l40s"
runtimes = ["vllm"]

[source]
kind = "huggingface"
repo = "example-org/Small-Model_v1.5"
revision = "{REVISION}"

[[files]]
path = "config.json"
size = 600
sha256 = "{SHA_A}"

[[files]]
path = "weights/model-00001.safetensors"
size = 4000
sha256 = "{SHA_B}"

[oci]
repository = "models/small-st"
registry = "10.0.0.5:5000"
digest = "{DIGEST}"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def edited(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` (which must occur exactly once) replaced by ``new``."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def load_error(tmp_path: Path, text: str, name: str = "tiny") -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        load_model(write(tmp_path, name, text))
    return raised.value


def test_gguf_model_from_a_local_directory_loads_with_every_field(tmp_path):
    model = load_model(write(tmp_path, "tiny", GGUF_LOCAL))
    assert model.name == "tiny"
    assert model.format == "gguf"
    assert model.license == "apache-2.0"
    assert model.min_hardware == "cpu"
    assert model.runtimes == ("llama.cpp",)
    assert model.eval_set == "evals/tiny.jsonl"
    assert model.source.kind == "local"
    assert model.source.path == "/srv/weights/tiny"
    assert model.source.local_directory() == Path("/srv/weights/tiny")
    assert [(f.path, f.size, f.sha256) for f in model.files] == [("tiny.gguf", 1000, SHA_A)]
    assert model.repository == "models/tiny"
    assert model.registry is None
    assert model.digest is None
    assert model.definition == tmp_path / "tiny.toml"


def test_safetensors_model_from_hugging_face_loads_pinned_and_mirrored(tmp_path):
    model = load_model(write(tmp_path, "small-st", SAFETENSORS_HF))
    assert model.source.kind == "huggingface"
    assert model.source.repo == "example-org/Small-Model_v1.5"
    assert model.source.revision == REVISION
    assert [f.path for f in model.files] == ["config.json", "weights/model-00001.safetensors"]
    assert model.total_size == 4600
    assert model.registry == "10.0.0.5:5000"
    assert model.digest == DIGEST
    assert model.eval_set is None


def test_catalog_holds_every_model_by_name(tmp_path):
    write(tmp_path, "tiny", GGUF_LOCAL)
    write(tmp_path, "small-st", SAFETENSORS_HF)
    (tmp_path / "README.md").write_text("not a model\n")
    catalog = load_catalog(tmp_path)
    assert sorted(catalog) == ["small-st", "tiny"]
    assert catalog["tiny"].format == "gguf"


def test_catalog_reads_the_directory_named_by_the_environment(tmp_path, monkeypatch):
    write(tmp_path, "tiny", GGUF_LOCAL)
    monkeypatch.setenv("LLMHOST_MODELS_DIR", str(tmp_path))
    assert list(load_catalog()) == ["tiny"]
    assert find("tiny").definition == tmp_path / "tiny.toml"


def test_find_returns_the_named_model(tmp_path):
    write(tmp_path, "tiny", GGUF_LOCAL)
    write(tmp_path, "small-st", SAFETENSORS_HF)
    assert find("small-st", tmp_path).digest == DIGEST


def test_find_of_an_unknown_model_lists_the_known_ones(tmp_path):
    write(tmp_path, "tiny", GGUF_LOCAL)
    write(tmp_path, "small-st", SAFETENSORS_HF)
    with pytest.raises(ConfigError, match="key `model`") as raised:
        find("huge", tmp_path)
    assert "no model 'huge'" in str(raised.value)
    assert "(models: small-st, tiny)" in str(raised.value)


def test_find_in_an_empty_catalog_says_there_are_none(tmp_path):
    with pytest.raises(ConfigError, match=r"\(models: none\)"):
        find("tiny", tmp_path)


def test_bad_toml_names_the_file(tmp_path):
    error = load_error(tmp_path, GGUF_LOCAL + "name = \n")
    assert "key `(file)`" in str(error)
    assert "is not valid TOML" in str(error)
    assert str(tmp_path / "tiny.toml") in str(error)


def test_name_must_match_the_file_name(tmp_path):
    error = load_error(tmp_path, GGUF_LOCAL, name="other")
    assert "key `name`: 'tiny' differs from the file name" in str(error)
    assert "name it 'other'" in str(error)


def test_every_error_names_the_file_it_is_in(tmp_path):
    error = load_error(tmp_path, edited(GGUF_LOCAL, 'format = "gguf"', 'format = "onnx"'))
    assert f"(in {tmp_path / 'tiny.toml'})" in str(error)


# Each case: (text replaced, replacement, key the error names, words in the problem).
BAD_INPUTS = [
    ('name = "tiny"\n', "", "name", "is missing"),
    ('format = "gguf"', 'format = "onnx"', "format", "'onnx' is not a format"),
    ('license = "apache-2.0"\n', "", "license", "is missing"),
    ('license = "apache-2.0"', 'license = ""', "license", "'' is not valid"),
    ('min_hardware = "cpu"', 'min_hardware = "tpu"', "min_hardware", "'tpu' is not a hardware"),
    ('runtimes = ["llama.cpp"]', "runtimes = []", "runtimes", "is not a list of runtimes"),
    ('runtimes = ["llama.cpp"]', 'runtimes = ["ollama"]', "runtimes", "not a list of runtimes"),
    ('runtimes = ["llama.cpp"]', 'runtimes = "vllm"', "runtimes", "not a list of runtimes"),
    (
        'format = "gguf"',
        'format = "safetensors"',
        "runtimes",
        "llama.cpp cannot serve safetensors weights",
    ),
    ('kind = "local"', 'kind = "s3"', "source.kind", "'s3' is not a source kind"),
    ('[source]\nkind = "local"\npath = "/srv/weights/tiny"\n', "", "source", "is missing"),
    ('path = "/srv/weights/tiny"', "", "source.path", "is missing"),
    ('[oci]\nrepository = "models/tiny"\n', "", "oci", "is missing"),
    ('repository = "models/tiny"', 'repository = "Models/Tiny"', "oci.repository", "not valid"),
    ('repository = "models/tiny"', 'repository = "models//tiny"', "oci.repository", "not valid"),
    (
        'repository = "models/tiny"',
        'repository = "models/tiny"\ndigest = "sha256:abc"',
        "oci.digest",
        "'sha256:abc' is not valid",
    ),
    (
        'repository = "models/tiny"',
        f'repository = "models/tiny"\ndigest = "sha512:{"c" * 64}"',
        "oci.digest",
        "is not valid",
    ),
    (
        'repository = "models/tiny"',
        f'repository = "models/tiny"\ndigest = "sha256:{"C" * 64}"',
        "oci.digest",
        "is not valid",
    ),
]


@pytest.mark.parametrize(("old", "new", "key", "problem"), BAD_INPUTS)
def test_bad_values_name_their_key(tmp_path, old, new, key, problem):
    error = load_error(tmp_path, edited(GGUF_LOCAL, old, new))
    assert f"key `{key}`: " in str(error)
    assert problem in str(error)


def hugging_face(revision: str = REVISION, repo: str = "example-org/Small-Model_v1.5") -> str:
    text = edited(SAFETENSORS_HF, f'revision = "{REVISION}"', f'revision = "{revision}"')
    return edited(text, 'repo = "example-org/Small-Model_v1.5"', f'repo = "{repo}"')


@pytest.mark.parametrize(
    "revision",
    ["main", "v1.0", REVISION[:39], REVISION + "8", REVISION.upper()],
    ids=["branch", "tag", "39-hex", "41-hex", "upper-case"],
)
def test_hugging_face_revision_must_be_a_full_commit_id(tmp_path, revision):
    error = load_error(tmp_path, hugging_face(revision=revision), name="small-st")
    assert f"key `source.revision`: {revision!r} is not valid" in str(error)
    assert "40-hex commit id" in str(error)


@pytest.mark.parametrize("repo", ["just-a-name", "owner/name/extra", "/name", "owner/"])
def test_hugging_face_repo_must_be_owner_slash_name(tmp_path, repo):
    error = load_error(tmp_path, hugging_face(repo=repo), name="small-st")
    assert f"key `source.repo`: {repo!r} is not valid" in str(error)


def test_hugging_face_revision_is_required(tmp_path):
    text = edited(SAFETENSORS_HF, f'revision = "{REVISION}"\n', "")
    error = load_error(tmp_path, text, name="small-st")
    assert "key `source.revision`: is missing" in str(error)


FILES = f"""\
[[files]]
path = "tiny.gguf"
size = 1000
sha256 = "{SHA_A}"
"""


def with_files(*entries: tuple[str, str, str]) -> str:
    """GGUF_LOCAL whose [[files]] are ``entries``: (path, size, sha256) as TOML values."""
    tables = "".join(
        f"[[files]]\npath = {path}\nsize = {size}\nsha256 = {sha}\n\n"
        for path, size, sha in entries
    )
    return edited(GGUF_LOCAL, FILES, tables)


GOOD_FILE = ('"tiny.gguf"', "1000", f'"{SHA_A}"')


def test_files_are_required(tmp_path):
    error = load_error(tmp_path, with_files())
    assert "key `files`: is missing or empty" in str(error)


def test_files_must_not_be_empty(tmp_path):
    # At the top level: under [oci] (where this test once put it) it is an unknown key there.
    error = load_error(tmp_path, edited(with_files(), "[source]", "files = []\n\n[source]"))
    assert "key `files`: is missing or empty" in str(error)


@pytest.mark.parametrize(
    "path",
    ['"../escape.gguf"', '"weights/../../escape.gguf"', '"/etc/passwd"', '"weights\\\\a.gguf"',
     '"weights//a.gguf"', '"weights/"', '"./a.gguf"', '""', "7"],
    ids=["dotdot", "inner-dotdot", "absolute", "backslash", "empty-segment", "trailing-slash",
         "dot", "empty", "not-a-string"],
)  # fmt: skip
def test_file_paths_must_stay_inside_the_model(tmp_path, path):
    error = load_error(tmp_path, with_files(GOOD_FILE, (path, "1", f'"{SHA_B}"')))
    assert "key `files[1].path`: " in str(error)
    assert "is not a relative path inside the model" in str(error)


def test_a_file_listed_twice_is_refused(tmp_path):
    error = load_error(tmp_path, with_files(GOOD_FILE, GOOD_FILE))
    assert "key `files`: lists 'tiny.gguf' twice" in str(error)


@pytest.mark.parametrize("size", ["0", "-1", "true", "1.5", '"1000"'])
def test_file_size_must_be_a_positive_int(tmp_path, size):
    error = load_error(tmp_path, with_files(GOOD_FILE, ('"b.gguf"', size, f'"{SHA_B}"')))
    assert "key `files[1].size`: " in str(error)
    assert "is not a size" in str(error)


@pytest.mark.parametrize(
    "sha256",
    [f'"{SHA_B.upper()}"', f'"{SHA_B[:63]}"', f'"{SHA_B}0"', f'"sha256:{SHA_B}"', '""'],
    ids=["upper-case", "short", "long", "prefixed", "empty"],
)
def test_file_sha256_must_be_64_lower_case_hex(tmp_path, sha256):
    error = load_error(tmp_path, with_files(GOOD_FILE, ('"b.gguf"', "1", sha256)))
    assert "key `files[1].sha256`: " in str(error)
    assert "is not valid" in str(error)


def test_file_sha256_is_required(tmp_path):
    text = edited(GGUF_LOCAL, f'sha256 = "{SHA_A}"\n', "")
    error = load_error(tmp_path, text)
    assert "key `files[0].sha256`: is missing" in str(error)


def test_min_hardware_of_the_wrong_type_names_the_key(tmp_path):
    error = load_error(
        tmp_path, edited(GGUF_LOCAL, 'min_hardware = "cpu"', 'min_hardware = ["cpu"]')
    )
    assert "key `min_hardware`" in str(error)


# record_mirror


def test_mirror_is_recorded_under_oci_and_loads_back(tmp_path):
    path = write(tmp_path, "tiny", GGUF_LOCAL)
    record_mirror(load_model(path), "10.0.0.5:5000", NEW_DIGEST)
    reloaded = load_model(path)
    assert reloaded.digest == NEW_DIGEST
    assert reloaded.registry == "10.0.0.5:5000"
    assert path.read_text().endswith(
        f'[oci]\nrepository = "models/tiny"\ndigest = "{NEW_DIGEST}"\nregistry = "10.0.0.5:5000"\n'
    )


OCI_FIRST = f"""\
# The tiny model; [oci] comes before the other tables.
name = "tiny"
format = "gguf"
license = "apache-2.0"
min_hardware = "cpu"
runtimes = ["llama.cpp"]

[oci]
# where hosts pull from
repository = "models/tiny"

[source]
kind = "local"  # copied by hand
path = "/srv/weights/tiny"

{FILES}"""


def test_recording_a_mirror_keeps_comments_and_other_tables(tmp_path):
    path = write(tmp_path, "tiny", OCI_FIRST)
    record_mirror(load_model(path), "10.0.0.5:5000", NEW_DIGEST)
    assert path.read_text() == edited(
        OCI_FIRST,
        'repository = "models/tiny"\n',
        f'repository = "models/tiny"\ndigest = "{NEW_DIGEST}"\nregistry = "10.0.0.5:5000"\n',
    )
    reloaded = load_model(path)
    assert reloaded.digest == NEW_DIGEST
    assert reloaded.source.path == "/srv/weights/tiny"
    assert [f.path for f in reloaded.files] == ["tiny.gguf"]


def test_recording_again_updates_the_digest_in_place(tmp_path):
    path = write(tmp_path, "small-st", SAFETENSORS_HF)
    record_mirror(load_model(path), "10.0.0.6:5000", NEW_DIGEST)
    written = path.read_text()
    assert len(re.findall(r"(?m)^digest\s*=", written)) == 1
    assert len(re.findall(r"(?m)^registry\s*=", written)) == 1
    assert DIGEST not in written
    assert written == SAFETENSORS_HF.replace(DIGEST, NEW_DIGEST).replace(
        "10.0.0.5:5000", "10.0.0.6:5000"
    )
    reloaded = load_model(path)
    assert (reloaded.digest, reloaded.registry) == (NEW_DIGEST, "10.0.0.6:5000")


def test_recording_the_same_mirror_twice_changes_nothing(tmp_path):
    path = write(tmp_path, "tiny", GGUF_LOCAL)
    record_mirror(load_model(path), "10.0.0.5:5000", NEW_DIGEST)
    once = path.read_text()
    record_mirror(load_model(path), "10.0.0.5:5000", NEW_DIGEST)
    assert path.read_text() == once


def test_an_oci_header_with_a_comment_is_still_found(tmp_path):
    path = write(tmp_path, "tiny", edited(GGUF_LOCAL, "[oci]\n", "[oci]  # mirror target\n"))
    record_mirror(load_model(path), "10.0.0.5:5000", NEW_DIGEST)
    assert load_model(path).digest == NEW_DIGEST


# Stricter checks: unknown keys, whole-value pins, gates that cannot fail, safe paths.


@pytest.mark.parametrize(
    ("old", "new", "key", "suggestion"),
    [
        ('eval_set = "evals', 'eval_sett = "evals', "eval_sett", "eval_set"),
        ("[oci]", "[gate]\nttft_p95_ms = 1\n\n[oci]", "gate", "gates"),
        ('path = "/srv/weights/tiny"', 'paht = "/srv/weights/tiny"', "source.paht", "path"),
        ("size = 1000", "size = 1000\nsah256 = 'x'", "files[0].sah256", "sha256"),
        ('repository = "models/tiny"', 'repository = "models/tiny"\ndigets = "x"', "oci.digets",
         "digest"),
        ("[oci]", "[gates]\nttft_p95 = 1\n\n[oci]", "gates.ttft_p95", "ttft_p95_ms"),
        ("[oci]", "[gates.cpu]\nerror_rate = 0.1\n\n[oci]", "gates.cpu.error_rate",
         "error_rate_max"),
        ("[oci]", "[gates.cpuu]\nttft_p95_ms = 1\n\n[oci]", "gates.cpuu", "cpu"),
        ('format = "gguf"', 'format = "ggu"', "format", "gguf"),
        ('kind = "local"', 'kind = "locale"', "source.kind", "local"),
        ('min_hardware = "cpu"', 'min_hardware = "l40"', "min_hardware", "l40s"),
        ('runtimes = ["llama.cpp"]', 'runtimes = ["llamacpp"]', "runtimes", "llama.cpp"),
    ],
    ids=["top-level", "gate-for-gates", "source", "files", "oci", "gates", "gates-class",
         "gates-unknown-class", "format", "source-kind", "min-hardware", "runtime"],
)  # fmt: skip
def test_an_unknown_or_misspelt_key_is_refused_with_the_nearest_one(
    tmp_path, old, new, key, suggestion
):
    error = load_error(tmp_path, edited(GGUF_LOCAL, old, new))
    assert error.key == key
    assert f"did you mean `{suggestion}`?" in str(error)
    assert str(tmp_path / "tiny.toml") in str(error)


def test_an_unknown_key_with_no_near_match_lists_the_known_ones(tmp_path):
    error = load_error(tmp_path, edited(GGUF_LOCAL, 'kind = "local"', 'kind = "local"\nzzz = 1'))
    assert error.key == "source.zzz"
    assert "is not a key of a local [source]" in str(error) and "did you mean" not in str(error)
    assert "a local [source] takes kind, path" in str(error)


def test_a_key_of_the_other_source_kind_is_refused(tmp_path):
    text = edited(
        SAFETENSORS_HF, f'revision = "{REVISION}"', f'revision = "{REVISION}"\npath = "x"'
    )
    error = load_error(tmp_path, text, name="small-st")
    assert error.key == "source.path" and "is not a key of a huggingface [source]" in str(error)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('name = "tiny"', 'name = "tiny\\n"', "name"),
        (f'sha256 = "{SHA_A}"', f'sha256 = "{SHA_A}\\n"', "files[0].sha256"),
        ('repository = "models/tiny"', 'repository = "models/tiny\\n"', "oci.repository"),
        ('repository = "models/tiny"', f'repository = "models/tiny"\ndigest = "{DIGEST}\\n"',
         "oci.digest"),
        ('repository = "models/tiny"', 'repository = "models/tiny"\nregistry = "r:5000\\n"',
         "oci.registry"),
        ('license = "apache-2.0"', 'license = "apache-2.0\\n"', "license"),
        ('path = "/srv/weights/tiny"', 'path = "/srv/weights/tiny\\n"', "source.path"),
    ],
    ids=["name", "sha256", "repository", "digest", "registry", "license", "source-path"],
)  # fmt: skip
def test_a_pinned_value_with_a_trailing_newline_is_refused(tmp_path, old, new, key):
    error = load_error(tmp_path, edited(GGUF_LOCAL, old, new))
    assert error.key == key and "is not valid" in str(error)


@pytest.mark.parametrize("field", ["revision", "repo"])
def test_a_hugging_face_pin_with_a_trailing_newline_is_refused(tmp_path, field):
    text = (
        hugging_face(revision=REVISION + "\\n")
        if field == "revision"
        else hugging_face(repo="example-org/Small\\n")
    )
    error = load_error(tmp_path, text, name="small-st")
    assert error.key == f"source.{field}" and "is not valid" in str(error)


@pytest.mark.parametrize(
    "repo", ["owner/..", "owner/a..b", "ówner/name", "-owner/name"], ids=["dotdot-name",
    "double-dot", "non-ascii", "leading-dash"]
)  # fmt: skip
def test_a_hugging_face_repo_is_ascii_and_never_dot_dot(tmp_path, repo):
    error = load_error(tmp_path, hugging_face(repo=repo), name="small-st")
    assert error.key == "source.repo"


@pytest.mark.parametrize(
    ("path", "reason"),
    [('"a\\nb.gguf"', "control character"), ('"a\\tb.gguf"', "control character"),
     ('"a\\u0000b.gguf"', "control character"), ('".llmhost-manifest.json"', "reserved"),
     ('"weights/./a.gguf"', "'.' segment")],
    ids=["newline", "tab", "nul", "manifest-name", "inner-dot"],
)  # fmt: skip
def test_file_paths_the_puller_would_refuse_are_refused_here(tmp_path, path, reason):
    error = load_error(tmp_path, with_files(GOOD_FILE, (path, "1", f'"{SHA_B}"')))
    assert error.key == "files[1].path" and reason in str(error)


def test_a_path_used_as_a_file_and_a_directory_is_refused(tmp_path):
    error = load_error(
        tmp_path, with_files(('"w"', "1", f'"{SHA_A}"'), ('"w/a.gguf"', "1", f'"{SHA_B}"'))
    )
    assert error.key == "files" and "'w' both as a file and as a directory" in str(error)


@pytest.mark.parametrize(
    ("limit", "value"),
    [("ttft_p95_ms", "-1"), ("ttft_p95_ms", "0"), ("e2e_p99_ms", "inf"), ("e2e_p99_ms", "nan"),
     ("error_rate_max", "0"), ("error_rate_max", "1"), ("error_rate_max", "1.5"),
     ("min_tokens_per_s", "0"), ("eval_tolerance", "1"), ("eval_tolerance", "-0.1"),
     ("eval_min_score", "0"), ("eval_min_score", "1.01"), ("ttft_p95_ms", "true"),
     ("ttft_p95_ms", '"800"')],
)  # fmt: skip
def test_a_gate_limit_outside_its_meaningful_range_is_refused(tmp_path, limit, value):
    for table in ("gates", "gates.cpu"):
        text = edited(GGUF_LOCAL, "[oci]", f"[{table}]\n{limit} = {value}\n\n[oci]")
        error = load_error(tmp_path, text)
        assert error.key == f"{table}.{limit}"
        assert "is not a gate limit" in str(error)


def test_gate_limits_at_the_edges_of_their_ranges_load():
    from llmhost.catalog import GATE_LIMITS, gate_limit_values

    table = {"ttft_p95_ms": 0.001, "error_rate_max": 0.999, "eval_tolerance": 0,
             "eval_min_score": 1, "min_tokens_per_s": 0.1, "e2e_p99_ms": 60000}  # fmt: skip
    assert gate_limit_values(table, "gate_limits") == (
        {k: float(v) for k, v in table.items()},
        None,
    )
    assert set(table) == set(GATE_LIMITS)
    assert (
        gate_limit_values({"error_rate_max": 1}, "gate_limits")[1] == "gate_limits.error_rate_max"
    )


def test_a_table_inside_a_class_gates_table_is_refused(tmp_path):
    text = edited(GGUF_LOCAL, "[oci]", "[gates.cpu.more]\nttft_p95_ms = 1\n\n[oci]")
    error = load_error(tmp_path, text)
    assert error.key == "gates.cpu.more"


def test_bad_toml_names_the_line_and_column(tmp_path):
    error = load_error(tmp_path, GGUF_LOCAL + "name = \n")
    assert f"{tmp_path / 'tiny.toml'}:{GGUF_LOCAL.count(chr(10)) + 1}:8: is not valid TOML" in str(
        error
    )


def test_a_model_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_bytes(GGUF_LOCAL.replace("apache-2.0", "apache\xe9").encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        load_model(path)
    assert raised.value.key == "(file)"
    assert f"{path}:4: is not UTF-8" in str(raised.value)  # licence: line 4


@pytest.mark.parametrize("name", ["../tiny", "Tiny", "tiny\n", ""])
def test_find_refuses_a_name_that_is_not_a_model_name(tmp_path, name):
    write(tmp_path, "tiny", GGUF_LOCAL)
    with pytest.raises(ConfigError, match="is not a model name"):
        find(name, tmp_path)
