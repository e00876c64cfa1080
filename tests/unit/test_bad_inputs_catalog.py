"""Broken model files, hardware classes, runtime pins and eval sets: each refused offline.

Every case writes a catalog (a model file and its eval set) that is otherwise valid,
breaks one thing the way a careless or hostile user would, and runs the real CLI:
`llmhost models validate` for model files, eval sets and the hardware matrix (named
by LLMHOST_HARDWARE_FILE; the model files are checked against it), and `llmhost
runtimes list` for the runtime pins (named by LLMHOST_RUNTIMES_FILE). Each requires
the exit code (validate: 1, a finding; runtimes: 2, cannot run), the key or the
file and line in the message, and no traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmhost.cli import main
from llmhost.paths import HARDWARE_CATALOG, INVENTORIES

SHA = "a" * 64
REVISION = "0123456789abcdef0123456789abcdef01234567"
MODEL = f"""\
name = "tiny"
format = "gguf"
license = "apache-2.0"
min_hardware = "cpu"
runtimes = ["llama.cpp"]
eval_set = "evals/tiny.jsonl"

[source]
kind = "huggingface"
repo = "example-org/tiny"
revision = "{REVISION}"

[[files]]
path = "tiny.gguf"
size = 1000
sha256 = "{SHA}"

[[files]]
path = "tokenizer/vocab.json"
size = 10
sha256 = "{"b" * 64}"

[oci]
repository = "models/tiny"
digest = "sha256:{"c" * 64}"

[gates]
ttft_p95_ms = 900
error_rate_max = 0.01

[gates.cpu]
e2e_p99_ms = 8000
"""
EVAL_LINES = [
    {"id": "capital", "prompt": "The capital of France is", "check": {"contains": "Paris"}},
    {"id": "number", "prompt": "A number", "check": {"regex": r"^\s*\d+"}},
    {"id": "json", "prompt": "JSON", "check": {"json_schema": {"type": "object"}}},
]
HARDWARE = HARDWARE_CATALOG.read_text()
RUNTIMES = (INVENTORIES / "runtimes.toml").read_text()


def replaced(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, old: str) -> int:
    return text[: text.index(old)].count("\n") + 1


class World:
    """The files one case may break, written before the CLI runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model: bytes = MODEL.encode()
        self.eval_set: bytes | None = b"\n".join(json.dumps(x).encode() for x in EVAL_LINES)
        self.hardware = HARDWARE.encode()
        self.runtimes = RUNTIMES.encode()

    def write(self) -> tuple[Path, dict[str, str]]:
        catalog = self.root / "models"
        (catalog / "evals").mkdir(parents=True)
        (catalog / "tiny.toml").write_bytes(self.model)
        if self.eval_set is not None:
            (catalog / "evals" / "tiny.jsonl").write_bytes(self.eval_set)
        (self.root / "hardware.toml").write_bytes(self.hardware)
        (self.root / "runtimes.toml").write_bytes(self.runtimes)
        env = {
            "LLMHOST_HARDWARE_FILE": str(self.root / "hardware.toml"),
            "LLMHOST_RUNTIMES_FILE": str(self.root / "runtimes.toml"),
            "LLMHOST_RUNTIME_BUILDS": str(self.root / "no-builds.toml"),
        }
        return catalog, env


def model(old: str, new: str) -> Callable[[World], None]:
    def apply(world: World) -> None:
        world.model = replaced(MODEL, old, new).encode()

    return apply


def model_bytes(data: bytes) -> Callable[[World], None]:
    def apply(world: World) -> None:
        world.model = data

    return apply


def eval_line(line: object) -> Callable[[World], None]:
    """The eval set with ``line`` as its second line: bytes and str as they are, else JSON."""
    if isinstance(line, str):
        second = line.encode()
    else:
        second = line if isinstance(line, bytes) else json.dumps(line).encode()

    def apply(world: World) -> None:
        world.eval_set = json.dumps(EVAL_LINES[0]).encode() + b"\n" + second + b"\n"

    return apply


def no_eval_set(world: World) -> None:
    world.eval_set = None


def hardware(old: str, new: str) -> Callable[[World], None]:
    def apply(world: World) -> None:
        world.hardware = replaced(HARDWARE, old, new).encode()

    return apply


def runtimes(old: str, new: str) -> Callable[[World], None]:
    def apply(world: World) -> None:
        world.runtimes = replaced(RUNTIMES, old, new).encode()

    return apply


FILE_PATH = 'path = "tokenizer/vocab.json"'
VALIDATE = "validate"
RUNTIMES_LIST = "runtimes"

# (id, how the world is broken, command, exit code, what the message must name)
CASES = [
    # -- model files: unknown keys, with the nearest known key ---------------------------
    ("gate-for-gates", model("[gates]\n", "[gate]\n"), VALIDATE, 1, "did you mean `gates`?"),
    ("eval-sett", model("eval_set =", "eval_sett ="), VALIDATE, 1, "key `eval_sett`"),
    ("source-revison", model("revision =", "revison ="), VALIDATE, 1, "key `source.revison`"),
    ("source-other-kind-key", model('repo = "', 'path = "x"\nrepo = "'), VALIDATE, 1,
     "key `source.path`"),
    ("files-sah256", model(f'sha256 = "{SHA}"', f'sah256 = "{SHA}"'), VALIDATE, 1,
     "key `files[0].sah256`"),
    ("oci-digets", model("digest = ", "digets = "), VALIDATE, 1, "did you mean `digest`?"),
    ("gates-limit-typo", model("ttft_p95_ms", "ttft_p95"), VALIDATE, 1,
     "key `gates.ttft_p95`: is not a gate limit (did you mean `ttft_p95_ms`?)"),
    ("gates-class-limit-typo", model("e2e_p99_ms", "e2e_p99"), VALIDATE, 1,
     "key `gates.cpu.e2e_p99`"),
    ("gates-unknown-class", model("[gates.cpu]", "[gates.l40]"), VALIDATE, 1,
     "did you mean `l40s`?"),
    ("format-typo", model('format = "gguf"', 'format = "ggfu"'), VALIDATE, 1,
     "did you mean `gguf`?"),
    # -- pinned values matched whole: a trailing newline is refused ------------------------
    ("sha256-newline", model(f'sha256 = "{SHA}"', f'sha256 = "{SHA}\\n"'), VALIDATE, 1,
     "key `files[0].sha256`"),
    ("digest-newline", model(f'{"c" * 64}"', f'{"c" * 64}\\n"'), VALIDATE, 1, "key `oci.digest`"),
    ("revision-newline", model(f'{REVISION}"', f'{REVISION}\\n"'), VALIDATE, 1,
     "key `source.revision`"),
    ("name-newline", model('name = "tiny"', 'name = "tiny\\n"'), VALIDATE, 1, "key `name`"),
    ("repo-newline", model('org/tiny"', 'org/tiny\\n"'), VALIDATE, 1, "key `source.repo`"),
    ("repository-newline", model('"models/tiny"', '"models/tiny\\n"'), VALIDATE, 1,
     "key `oci.repository`"),
    # -- gates that cannot fail (or cannot pass) -----------------------------------------
    ("ttft-negative", model("ttft_p95_ms = 900", "ttft_p95_ms = -1"), VALIDATE, 1,
     "key `gates.ttft_p95_ms`: -1 is not a gate limit"),
    ("error-rate-one", model("error_rate_max = 0.01", "error_rate_max = 1"), VALIDATE, 1,
     "key `gates.error_rate_max`"),
    ("eval-tolerance-one", model("[gates.cpu]", "eval_tolerance = 1.0\n[gates.cpu]"), VALIDATE, 1,
     "key `gates.eval_tolerance`"),
    ("eval-min-score-above-one", model("e2e_p99_ms = 8000", "eval_min_score = 1.5"), VALIDATE, 1,
     "key `gates.cpu.eval_min_score`"),
    ("min-tokens-zero", model("[gates.cpu]", "min_tokens_per_s = 0\n[gates.cpu]"), VALIDATE, 1,
     "key `gates.min_tokens_per_s`"),
    ("latency-inf", model("e2e_p99_ms = 8000", "e2e_p99_ms = inf"), VALIDATE, 1,
     "needs a finite number"),
    # -- [[files]] paths the host-side puller would refuse -------------------------------
    ("path-newline", model(FILE_PATH, 'path = "tokenizer/vocab\\n.json"'), VALIDATE, 1,
     "control character"),
    ("path-tab", model(FILE_PATH, 'path = "tokenizer/\\tvocab.json"'), VALIDATE, 1,
     "control character"),
    ("path-nul", model(FILE_PATH, 'path = "tokenizer/vocab.json\\u0000"'), VALIDATE, 1,
     "control character"),
    ("path-backslash", model(FILE_PATH, 'path = "tokenizer\\\\vocab.json"'), VALIDATE, 1,
     "backslash"),
    ("path-absolute", model(FILE_PATH, 'path = "/etc/cron.d/x"'), VALIDATE, 1, "absolute path"),
    ("path-dotdot", model(FILE_PATH, 'path = "tokenizer/../../x"'), VALIDATE, 1, "contains '..'"),
    ("path-dot", model(FILE_PATH, 'path = "./tokenizer/vocab.json"'), VALIDATE, 1,
     "'.' segment"),
    ("path-empty-segment", model(FILE_PATH, 'path = "tokenizer//vocab.json"'), VALIDATE, 1,
     "empty path segment"),
    ("path-manifest-name", model(FILE_PATH, 'path = ".llmhost-manifest.json"'), VALIDATE, 1,
     "reserved for the manifest"),
    ("path-file-and-directory", model(FILE_PATH, 'path = "tiny.gguf/vocab.json"'), VALIDATE, 1,
     "both as a file and as a directory"),
    # -- files that are not TOML or not UTF-8: the line named ----------------------------
    ("model-not-toml", model("size = 1000", "size = = 1000"), VALIDATE, 1,
     f"tiny.toml:{line_of(MODEL, 'size = 1000')}:8: is not valid TOML"),
    ("model-not-utf8", model_bytes(MODEL.replace("apache-2.0", "apache\xe9").encode("latin-1")),
     VALIDATE, 1, f"tiny.toml:{line_of(MODEL, 'license')}: is not UTF-8"),
    # -- eval sets, validated with the model ---------------------------------------------
    ("eval-not-utf8", eval_line(b'{"id": "x", "prompt": "caf\xe9", "check": {"exact": "x"}}'),
     VALIDATE, 1, "tiny.jsonl:2: is not UTF-8"),
    ("eval-not-json", eval_line('{"id": "x", "prompt": '), VALIDATE, 1, "tiny.jsonl:2: not JSON"),
    ("eval-unknown-check", eval_line({"id": "x", "prompt": "p", "check": {"regexp": "x"}}),
     VALIDATE, 1, "tiny.jsonl:2: `check` {'regexp': 'x'} is not one check (did you mean `regex`?)"),
    ("eval-unknown-key", eval_line({"id": "x", "promt": "p", "check": {"exact": "x"}}),
     VALIDATE, 1, "tiny.jsonl:2: `promt` is not a key of an eval line (did you mean `prompt`?)"),
    ("eval-regex-not-compiling", eval_line({"id": "x", "prompt": "p", "check": {"regex": "(a"}}),
     VALIDATE, 1, "tiny.jsonl:2: regex '(a' does not compile"),
    ("eval-regex-matches-anything",
     eval_line({"id": "x", "prompt": "p", "check": {"regex": "x*"}}), VALIDATE, 1,
     "tiny.jsonl:2: regex 'x*' matches any answer"),
    ("eval-schema-invalid",
     eval_line({"id": "x", "prompt": "p", "check": {"json_schema": {"type": "objekt"}}}),
     VALIDATE, 1, "tiny.jsonl:2: the JSON schema is invalid"),
    ("eval-schema-remote-ref",
     eval_line({"id": "x", "prompt": "p", "check": {"json_schema": {"$ref": "http://x/s"}}}),
     VALIDATE, 1, "tiny.jsonl:2: the JSON schema's $ref 'http://x/s' does not resolve"),
    ("eval-duplicate-id", eval_line(EVAL_LINES[0]), VALIDATE, 1,
     "tiny.jsonl:2: uses id 'capital' twice (first on line 1)"),
    ("eval-missing", no_eval_set, VALIDATE, 1, "tiny.jsonl does not exist"),
    # -- the hardware matrix (LLMHOST_HARDWARE_FILE) -------------------------------------
    ("hardware-llama-cpp-key", hardware("threads = 2", "thread = 2"), VALIDATE, 1,
     "key `cpu.llama_cpp.thread`: is not a key of [cpu.llama_cpp] (did you mean `threads`?)"),
    ("hardware-vllm-key", hardware("max_num_seqs = 128", "max_num_seq = 128"), VALIDATE, 1,
     "key `l40s.vllm.max_num_seq`"),
    ("hardware-class-key", hardware('description = "Server with one L40S (48 GiB)"',
                                    'descripton = "Server with one L40S (48 GiB)"'),
     VALIDATE, 1, "did you mean `description`?"),
    ("hardware-driver-newline", hardware('gpu_memory_gib = 24\ndriver_branch = "550"',
                                         'gpu_memory_gib = 24\ndriver_branch = "550\\n"'),
     VALIDATE, 1, "key `rtx4090.driver_branch`"),
    ("hardware-gpu-key-on-cpu", hardware("gpu_count = 0", "gpu_count = 0\ndriver_branch = '550'"),
     VALIDATE, 1, "key `cpu.driver_branch`: is set on a class without GPUs"),
    ("hardware-not-toml", hardware("[cpu.llama_cpp]", "[cpu.llama_cpp"), VALIDATE, 1,
     f"hardware.toml:{line_of(HARDWARE, '[cpu.llama_cpp]')}:"),
    # -- the runtime pins (LLMHOST_RUNTIMES_FILE) ----------------------------------------
    ("runtimes-key", runtimes("source_subdir =", "source_subdri ="), RUNTIMES_LIST, 2,
     "key `llama_cpp.source_subdri`: is not a key of [llama_cpp] (did you mean `source_subdir`?)"),
    ("runtimes-sha-newline", runtimes('a2e"', 'a2e\\n"'), RUNTIMES_LIST, 2,
     "key `llama_cpp.source_sha256`"),
    ("runtimes-version-newline", runtimes('version = "0.10.1.1"', 'version = "0.10.1.1\\n"'),
     RUNTIMES_LIST, 2, "key `vllm.version`"),
    ("runtimes-lock-outside", runtimes('lock = "inventories', 'lock = "../inventories'),
     RUNTIMES_LIST, 2, "key `vllm.lock`"),
    ("runtimes-subdir-outside", runtimes('subdir = "', 'subdir = "../'), RUNTIMES_LIST, 2,
     "key `llama_cpp.source_subdir`"),
]  # fmt: skip


def run(world: World, command: str) -> tuple[int, str, object]:
    catalog, env = world.write()
    args = ["models", "--catalog", str(catalog), "validate"]
    if command == RUNTIMES_LIST:
        args = ["runtimes", "list"]
    result = CliRunner().invoke(main, args, env=env)
    return result.exit_code, result.output, result.exception


def test_the_unbroken_world_passes(tmp_path: Path):
    world = World(tmp_path)
    code, output, _ = run(world, VALIDATE)
    assert code == 0, output
    assert json.loads(output) == {"ok": True, "checked": 1, "failures": []}
    code, output, _ = run(World(tmp_path / "again"), RUNTIMES_LIST)
    assert code == 0, output


@pytest.mark.parametrize(
    ("break_it", "command", "code", "named"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_bad_catalog_input_is_refused_offline_naming_what_is_wrong(
    tmp_path: Path, break_it, command, code, named
):
    world = World(tmp_path)
    break_it(world)
    exit_code, output, exception = run(world, command)
    assert "Traceback (most recent call last)" not in output
    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert exit_code == code, output
    if command == VALIDATE:
        report = json.loads(output)
        assert report["ok"] is False and report["checked"] == 1
        assert any(named in failure["error"] for failure in report["failures"]), output
    else:
        assert output.startswith("error: ") and named in output, output


def test_there_are_at_least_thirty_distinct_bad_inputs():
    assert len({case[0] for case in CASES}) == len(CASES) >= 30


def test_validate_without_a_catalog_cannot_run(tmp_path: Path):
    result = CliRunner().invoke(main, ["models", "--catalog", str(tmp_path / "none"), "validate"])
    assert result.exit_code == 2 and "is not a directory" in result.output


@pytest.mark.parametrize("name", ["../tiny", "Tiny"])
def test_validate_refuses_a_name_that_is_not_a_model_name(tmp_path: Path, name: str):
    catalog, env = World(tmp_path).write()
    args = ["models", "--catalog", str(catalog), "validate", name]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1
    (failure,) = json.loads(result.output)["failures"]
    assert failure["key"] == "model" and "is not a model name" in failure["error"]
