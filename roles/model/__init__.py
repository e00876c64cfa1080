"""Role model: the weights a host serves, pulled by digest from the internal registry.

preflight  the model is in the catalog and mirrored (has a digest), the host's class is
           big enough, registries are known, the disk has room
install    the host-side tools (the puller among them) and the registry credentials
configure  the blob store and models directory
service    pull: each blob verified while streaming, resumed, renamed into the store;
           the model materialised with hard links; nothing when it already is

No host ever reaches the internet for weights: the only source is the registry.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import files

from llmhost.catalog import Model, find
from llmhost.endpoints import CONTROL_SIDE, MODEL_SOURCE, REGISTRY, Call
from llmhost.errors import ConfigError
from llmhost.hardware import check_hardware, load_classes
from llmhost.mirror import hub_endpoint
from llmhost.onhost.layout import SERVICE_USER, STATE_DIR
from llmhost.secrets import registry_credentials, secrets_directory
from llmhost.settings import from_data
from roles._common import checked
from roles._common.checks import check_at_least, check_host_port, on_host
from roles._common.egress import through_proxy
from roles._common.onhost import install_onhost_tools
from roles._common.operations import secret_upload_options
from roles.model.defaults import AUTH_FILE, MODELS_DIR, STORE, ModelSettings
from roles.model.facts import FreeBytes, StoredBlobs
from roles.model.operations import pulled
from roles.registry.defaults import endpoint


@deploy("llmhost model")
def model() -> None:
    settings, wanted, registries = preflight()
    install_puller()
    configure()
    pulled(
        name=f"Model {wanted.name} ({wanted.total_size} bytes) by digest",
        model=wanted.name,
        digest=str(wanted.digest),
        repository=wanted.repository,
        registries=registries,
        sizes=expected_sizes(wanted),
        jobs=settings.model_pull_jobs,
    )


def expected_sizes(wanted: Model) -> dict[str, int]:
    return {f.path: f.size for f in wanted.files}


def endpoints() -> list[Call]:
    """The registries the host pulls from, in order, and the hub the model is mirrored from
    (by the control machine, `llmhost models mirror`)."""
    settings = from_data(ModelSettings, host.data, host.name)
    if not settings.model_name:
        return []
    registries = pull_registries(settings)
    calls = [
        through_proxy(
            REGISTRY,
            registry,
            "model_registries",
            note="pulls: primary" if index == 0 else "pulls: fallback on network errors",
        )
        for index, registry in enumerate(registries)
    ]
    with on_host(host.name, key="model_name"):
        wanted = find(settings.model_name)
    if wanted.source.kind == "huggingface":
        calls.append(
            Call(
                MODEL_SOURCE,
                hub_endpoint(),
                "model_name",
                side=CONTROL_SIDE,
                note=f"`llmhost models mirror {wanted.name}` downloads {wanted.source.repo}",
            )
        )
    return calls


def check() -> tuple[ModelSettings, Model, list[str]]:
    """The host's data, the catalog and the inventory, with no host contacted."""
    settings = from_data(ModelSettings, host.data, host.name)
    check_at_least(host.name, settings, ("model_pull_jobs",), 1)
    wanted = mirrored_model(settings.model_name)
    check_hardware_fits(wanted)
    registries = pull_registries(settings)
    return settings, wanted, registries


def preflight() -> tuple[ModelSettings, Model, list[str]]:
    settings, wanted, registries = check()
    check_disk(wanted)
    return settings, wanted, registries


def mirrored_model(name: str | None) -> Model:
    """The catalog model ``model_name`` names, which must be mirrored (have a digest)."""
    if not name:
        raise ConfigError("is unset", key="model_name", fix="name a catalog model", host=host.name)
    with on_host(host.name, key="model_name"):
        wanted = find(name)
    if not wanted.digest:
        raise ConfigError(
            f"model {wanted.name} has no OCI digest yet",
            key="model_name",
            fix=f"mirror it first: llmhost models mirror {wanted.name}",
            host=host.name,
        )
    return wanted


def pull_registries(settings: ModelSettings) -> list[str]:
    """Where this host pulls from, primary first: the setting, else the `registry` group."""
    registries = settings.model_registries or [
        endpoint(member.name, member.data) for member in inventory.get_group("registry", [])
    ]
    if not registries:
        raise ConfigError(
            "is empty and the inventory has no `registry` group",
            key="model_registries",
            fix="add registry hosts to the `registry` group, or list `host:port` registries",
            host=host.name,
        )
    for registry in settings.model_registries:
        check_host_port(host.name, "model_registries", registry)
    return registries


def check_hardware_fits(wanted: Model) -> None:
    classes = load_classes()
    mine = check_hardware(host.data.get("hardware"), classes, host.name)
    needed = classes[wanted.min_hardware]
    if mine.gpu_count * mine.gpu_memory_gib < needed.gpu_count * needed.gpu_memory_gib:
        raise ConfigError(
            f"model {wanted.name} needs at least a {needed.name} ({needed.gpu_count} x "
            f"{needed.gpu_memory_gib} GiB); this host is a {mine.name}",
            key="model_name",
            fix="serve a smaller model here, or put the model on bigger hosts",
            host=host.name,
        )


def check_disk(wanted: Model) -> None:
    """Refuse before downloading when the store cannot take the missing blobs."""
    stored = host.get_fact(StoredBlobs, store=STORE)
    missing = sum({f.sha256: f.size for f in wanted.files if f.sha256 not in stored}.values())
    free = host.get_fact(FreeBytes, path=STATE_DIR)
    if missing and free is not None and free < missing:
        raise ConfigError(
            f"model {wanted.name} needs {missing} more bytes; {STATE_DIR} has {free} free",
            key="model_name",
            fix=f"free space on the filesystem of {STATE_DIR}, or grow it",
            host=host.name,
        )


def install_puller() -> None:
    """The puller and the registry credentials it reads (the runtime role pulls with it too)."""
    install_onhost_tools()
    credentials = registry_credentials(secrets_directory(host.data, host.name))
    checked.put(
        **secret_upload_options(),
        name="Registry credentials for pulls",
        src=StringIO(credentials.auth_json()),
        dest=AUTH_FILE,
        # Only the service user, which runs the puller, may read the password.
        user=SERVICE_USER,
        group=SERVICE_USER,
        mode="0600",
        create_remote_dir=False,  # /etc/llmhost is base's, and stays root:llmhost
    )


def configure() -> None:
    for path in (STORE, MODELS_DIR):
        files.directory(
            name=f"{path}: owned by the service user",
            path=path,
            user=SERVICE_USER,
            group=SERVICE_USER,
            mode="0750",
        )
