"""Role runtime: the serving engine as blue-green systemd units.

preflight  the hardware class, the engine and whether it can serve the model's
           format, the ports, the recorded state; which colour is idle, and
           whether the wanted release is already running there or on the active one
install    the runtime user, the control helper, the engine (llama-server pulled by
           digest and copied root-owned; or vLLM in a venv from a hashed lock, its
           wheels pulled by digest once published), the
           hardened unit template and the optional scheduled-restart timer
configure  on the idle colour only: check the model is materialised, write its env file
service    on the idle colour only: (re)start it, wait until /health answers and one
           token is generated, record the release in /var/lib/llmhost/state.json

The active colour is never touched: a deploy stages the release on the idle
colour, the gate soaks and evaluates it, and cutover (the gateway) moves traffic.
A host's first release is no different: it serves nobody until its gate passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import StringIO
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server, systemd

from llmhost.catalog import Model
from llmhost.endpoints import CONTROL_SIDE, REGISTRY, RUNTIME_SOURCE, Call
from llmhost.errors import ConfigError
from llmhost.hardware import RUNTIMES, HardwareClass, check_hardware, load_classes
from llmhost.onhost.jsonlog import vllm_logging_config
from llmhost.onhost.layout import (
    COLOURS,
    CONFIG_DIR,
    ONHOST_APP,
    ROLLBACK_WINDOW_UNIT,
    SERVICE_USER,
    STATE_FILE,
)
from llmhost.runtimes import current_vllm_wheels, find_build, load_sources, sha256_file
from llmhost.settings import from_data
from roles._common import checked
from roles._common.checked import put_template
from roles._common.checks import check_at_least, on_host
from roles._common.egress import through_proxy
from roles._common.facts import HostState
from roles._common.onhost import install_onhost_tools, runtimectl
from roles._common.ports import check_host_ports
from roles.model import install_puller, mirrored_model, pull_registries
from roles.model.defaults import ModelSettings, model_directory
from roles.model.operations import pulled
from roles.runtime.defaults import (
    LLAMA_CPP_DIR,
    RESTART_SERVICE,
    RESTART_TIMER,
    RUNTIME_ARTIFACTS,
    RUNTIME_USER,
    UNIT_PATH,
    VLLM_DIR,
    VLLM_LOGGING_CONFIG,
    RuntimeSettings,
    env_file,
    llama_cpp_binary,
    unit_name,
    vllm_venv,
)
from roles.runtime.engines import Release, check_servable, llama_cpp_release, vllm_release
from roles.runtime.facts import UnitActive
from roles.runtime.operations import binary_installed, vllm_installed

# Where pip finds vLLM and its dependencies: PyPI's index and the host serving its files.
PYPI = ("https://pypi.org/simple", "https://files.pythonhosted.org")


@dataclass(frozen=True)
class Plan:
    settings: RuntimeSettings
    hardware: HardwareClass
    model: Model
    release: Release
    active: str | None
    stage_on: str | None  # the idle colour to stage on; None: nothing to stage
    wanted_on: str  # the colour that runs the wanted release once this role is done
    reason: str  # why nothing is staged, or what is


@deploy("llmhost runtime")
def runtime() -> None:
    plan = preflight()
    unit = install(plan)
    if plan.stage_on is None:
        host.noop(plan.reason)
        systemd.daemon_reload(name="systemd: load the changed unit template", _if=unit.did_change)
        return
    configure(plan)
    service(plan, unit)


# -- preflight ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """What the host's data asks the runtime to serve, before any host is asked anything."""

    settings: RuntimeSettings
    hardware: HardwareClass
    model: Model
    release: Release


def check() -> Wanted:
    """The settings, the engine, the model it serves and the release, with no host contacted."""
    settings = from_data(RuntimeSettings, host.data, host.name)
    hardware = check_hardware(host.data.get("hardware"), load_classes(), host.name)
    engine = settings.runtime_engine or hardware.runtime
    if engine not in RUNTIMES:
        raise ConfigError(
            f"{engine!r} is not a runtime",
            key="runtime_engine",
            fix=f"use one of {', '.join(RUNTIMES)}",
            host=host.name,
        )
    check_settings(settings)
    model = served_model()
    check_servable(engine, model, host.name)
    if engine == "vllm":
        with on_host(host.name):
            current_vllm_wheels(load_sources().vllm)  # another lock's wheels: refused here
    return Wanted(settings, hardware, model, wanted_release(engine, settings, hardware, model))


def endpoints() -> list[Call]:
    """Where the engine comes from: llama-server is built on the control machine from the
    pinned source and pulled from the registries like a model; vLLM is installed on the host
    from PyPI, with the hashes of the lock (re-locked from the control machine)."""
    settings = from_data(RuntimeSettings, host.data, host.name)
    hardware = check_hardware(host.data.get("hardware"), load_classes(), host.name)
    engine = settings.runtime_engine or hardware.runtime
    with on_host(host.name):
        sources = load_sources()
    if engine == "llama.cpp":
        registries = pull_registries(from_data(ModelSettings, host.data, host.name))
        return [
            Call(
                RUNTIME_SOURCE,
                sources.llama_cpp.url,
                "llama_cpp.source_url",
                side=CONTROL_SIDE,
                note=f"`llmhost runtimes build --class {hardware.name}`",
            ),
            *(
                through_proxy(REGISTRY, registry, "model_registries", note="pulls the build")
                for registry in registries
            ),
        ]
    if engine != "vllm":
        return []  # not a runtime: its check says so
    lock = f"vLLM {sources.vllm.version}, the hashed lock {sources.vllm.lock.name}"
    with on_host(host.name):
        wheels = current_vllm_wheels(sources.vllm)
    if wheels:
        registries = pull_registries(from_data(ModelSettings, host.data, host.name))
        on_hosts = [
            through_proxy(
                REGISTRY, registry, "model_registries", note=f"pulls the wheels of {lock}"
            )
            for registry in registries
        ]
    else:
        on_hosts = [
            through_proxy(RUNTIME_SOURCE, index, "vllm.lock", note=f"pip installs {lock}")
            for index in PYPI
        ]
    return [
        *on_hosts,
        Call(
            RUNTIME_SOURCE,
            PYPI[0],
            "vllm.lock",
            side=CONTROL_SIDE,
            note="`llmhost runtimes lock-vllm` resolves the lock, `publish-vllm` fetches its "
            "wheels (their --index-url)",
        ),
    ]


def preflight() -> Plan:
    wanted = check()
    settings, hardware, model, release = (
        wanted.settings,
        wanted.hardware,
        wanted.model,
        wanted.release,
    )
    state = host.get_fact(HostState, path=STATE_FILE)
    if "unreadable" in state:
        raise ConfigError(
            f"{STATE_FILE} is {state['unreadable']}",
            key=None,
            fix=f"restore {STATE_FILE} from the last good copy, or move it away: the next "
            "release is then staged on blue and becomes active",
            host=host.name,
        )
    active, stage_on, wanted_on, reason = stage_decision(state, release.id)
    return Plan(settings, hardware, model, release, active, stage_on, wanted_on, reason)


def check_settings(settings: RuntimeSettings) -> None:
    """Ports (both colours, and none another service on this host has), and timeouts."""
    check_host_ports(
        host.name, host.data, host.groups, mine=[f"runtime_ports.{c}" for c in COLOURS]
    )
    timeouts = ("runtime_ready_timeout_s", "runtime_drain_timeout_s")
    check_at_least(host.name, settings, timeouts, 1)


def served_model() -> Model:
    return mirrored_model(from_data(ModelSettings, host.data, host.name).model_name)


def wanted_release(
    engine: str, settings: RuntimeSettings, hardware: HardwareClass, model: Model
) -> Release:
    served = settings.runtime_served_model_name or model.name
    extra = list(settings.runtime_extra_args)
    with on_host(host.name):
        if engine == "llama.cpp":
            binary = llama_cpp_binary(find_build(hardware.name).digest)
            return llama_cpp_release(model, hardware, binary, served, extra)
        return vllm_release(model, hardware, load_sources().vllm.version, served, extra)


def other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


def stage_decision(
    state: dict[str, Any], release_id: str
) -> tuple[str | None, str | None, str, str]:
    """(active colour, colour to stage on or None, colour that will run the release, why)."""
    active = state.get("active")
    colours = state.get("colours") or {}
    if active not in COLOURS:
        return None, "blue", "blue", f"first release {release_id}: staged on blue"
    if (colours.get(active) or {}).get("id") == release_id:
        return active, None, active, f"release {release_id} is already active on {active}"
    idle = other(active)
    if (colours.get(idle) or {}).get("id") == release_id and host.get_fact(
        UnitActive, unit=unit_name(idle)
    ):
        return active, None, idle, f"release {release_id} is staged on {idle}, awaiting cutover"
    return active, idle, idle, f"release {release_id} staged on idle {idle} ({active} serves)"


# -- install -----------------------------------------------------------------------------


def install(plan: Plan) -> OperationMeta:
    """User, helper, engine and units; returns the unit template's operation."""
    server.group(name=f"Group {RUNTIME_USER}", group=RUNTIME_USER, system=True)
    server.user(
        name=f"System user {RUNTIME_USER} (runs the engine; owns nothing it runs)",
        user=RUNTIME_USER,
        group=RUNTIME_USER,
        system=True,
        home="/nonexistent",
        create_home=False,
        shell="/usr/sbin/nologin",
    )
    install_onhost_tools()  # runtimectl: readiness, drain, state
    if plan.release.engine == "llama.cpp":
        install_llama_cpp(plan.hardware)
    else:
        install_vllm()
    unit = put_template(
        name=f"Runtime unit template {UNIT_PATH.rsplit('/', 1)[1]} (hardened)",
        path="runtime/llmhost-runtime@.service.j2",
        dest=UNIT_PATH,
        mode="0644",
        runtime_user=RUNTIME_USER,
        model_group=SERVICE_USER,
        runtimectl=f"{ONHOST_APP} runtimectl",
        env_file=env_file("%i"),
        drain_timeout=plan.settings.runtime_drain_timeout_s,
        gpu=plan.hardware.has_gpu,
        jit=plan.release.engine == "vllm",  # torch and triton write code at run time
    )
    restart_timers(plan.settings)
    return unit


def pull_runtime_artifact(
    what: str, artifact: str, digest: str, repository: str, sizes: dict[str, int]
) -> str:
    """Pull a runtime artifact by digest into the service user's store; returns where."""
    pulled_to = f"{RUNTIME_ARTIFACTS}/{artifact}@{digest}"
    install_puller()
    files.directory(
        name=f"{RUNTIME_ARTIFACTS}: pulled runtime builds",
        path=RUNTIME_ARTIFACTS,
        user=SERVICE_USER,
        group=SERVICE_USER,
        mode="0750",
    )
    pulled(
        name=f"{what} by digest",
        model=artifact,
        digest=digest,
        repository=repository,
        registries=pull_registries(from_data(ModelSettings, host.data, host.name)),
        sizes=sizes,
        directory=pulled_to,
    )
    return pulled_to


def install_llama_cpp(hardware: HardwareClass) -> None:
    build = find_build(hardware.name)
    pulled_to = pull_runtime_artifact(
        f"llama.cpp build for {hardware.name}",
        "llama.cpp",
        build.digest,
        load_sources().llama_cpp.repository,
        {f.path: f.size for f in build.files},
    )
    files.directory(name=f"{LLAMA_CPP_DIR}: engine binaries", path=LLAMA_CPP_DIR, mode="0755")
    server_binary = llama_cpp_binary(build.digest)
    for name in ("llama-server", "llama-bench"):
        binary_installed(
            name=f"{name} installed root-owned from the verified build",
            source=f"{pulled_to}/{name}",
            dest=f"{server_binary.rsplit('/', 1)[0]}/{name}",
            sha256=build.file(name).sha256,
        )


def install_vllm() -> None:
    pin = load_sources().vllm
    if not pin.lock.exists():
        raise ConfigError(
            f"{pin.lock} does not exist",
            key="vllm.lock",
            fix="generate it: llmhost runtimes lock-vllm",
            host=host.name,
        )
    checked.packages(name="Python venv support for vLLM", packages=["python3-venv"])
    files.directory(name=f"{VLLM_DIR}: vLLM versions", path=VLLM_DIR, mode="0755")
    lock = f"{VLLM_DIR}/{pin.version}.lock.txt"
    checked.put(
        name=f"vLLM {pin.version} lock (every distribution hashed)",
        src=str(pin.lock),
        dest=lock,
        mode="0644",
        create_remote_dir=False,
    )
    checked.put(
        name="vLLM: its log records as JSON lines (logging config)",
        src=StringIO(vllm_logging_config()),
        dest=VLLM_LOGGING_CONFIG,
        mode="0644",
        create_remote_dir=False,
    )
    with on_host(host.name):
        wheels = current_vllm_wheels(pin)
    find_links = (
        pull_runtime_artifact(
            f"vLLM {pin.version} wheels",
            "vllm-wheels",
            wheels.digest,
            pin.repository,
            {f.path: f.size for f in wheels.files},
        )
        if wheels
        else None
    )
    vllm_installed(
        name=f"vLLM {pin.version} in {vllm_venv(pin.version)}"
        + (" from the registry's wheels" if find_links else " from the index"),
        venv=vllm_venv(pin.version),
        lock=lock,
        lock_sha256=sha256_file(pin.lock),
        egress_env=f"{CONFIG_DIR}/egress.env",
        find_links=find_links,
    )


def restart_timers(settings: RuntimeSettings) -> None:
    """The scheduled restart: a timer per colour when a schedule is set, else none at all."""
    schedule = settings.runtime_restart_schedule
    units = ((RESTART_SERVICE, "restart.service.j2"), (RESTART_TIMER, "restart.timer.j2"))
    timers = [RESTART_TIMER.replace("@", f"@{colour}") for colour in COLOURS]
    if not schedule:
        for timer in timers:
            checked.service(
                name=f"No scheduled restart: {timer} off",
                service=timer,
                running=False,
                enabled=False,
            )
        for name, _ in units:
            files.file(
                name=f"No scheduled restart: no {name}",
                path=f"/etc/systemd/system/{name}",
                present=False,
            )
        return
    changed = [
        put_template(
            name=f"Scheduled restart: {name}",
            path=f"runtime/{template}",
            dest=f"/etc/systemd/system/{name}",
            mode="0644",
            schedule=schedule,
        )
        for name, template in units
    ]
    for timer in timers:
        checked.service(
            name=f"Scheduled restart: {timer} on ({schedule})",
            service=timer,
            running=True,
            enabled=True,
            restarted=any(op.will_change for op in changed),
            daemon_reload=any(op.will_change for op in changed),
        )


# -- configure and service (idle colour only) --------------------------------------------


def configure(plan: Plan) -> None:
    colour = plan.stage_on
    assert colour is not None and plan.model.digest
    server.shell(
        name=f"Model {plan.model.name} is materialised for {colour}",
        commands=[
            runtimectl(
                "check-model",
                "--dir",
                model_directory(plan.model.name, plan.model.digest),
                "--digest",
                plan.model.digest,
            )
        ],
    )
    put_template(
        name=f"{colour}: release {plan.release.id}",
        path="runtime/runtime.env.j2",
        dest=env_file(colour),
        mode="0644",
        colour=colour,
        release=plan.release,
        port=plan.settings.runtime_ports[colour],
    )


def service(plan: Plan, unit: OperationMeta) -> None:
    colour = plan.stage_on
    assert colour is not None
    port = plan.settings.runtime_ports[colour]
    server.shell(
        name=f"{colour}: no stop pending from an earlier rollback window",
        commands=[
            f"systemctl stop {ROLLBACK_WINDOW_UNIT.format(colour)}.timer 2>/dev/null || true"
        ],
    )
    checked.service(
        name=f"{colour}: start release {plan.release.id} on port {port}",
        service=unit_name(colour),
        running=True,
        restarted=True,
        enabled=True,
        daemon_reload=unit.will_change,
    )
    server.shell(
        name=f"{colour}: ready (/health 200 and a one-token completion)",
        commands=[
            runtimectl(
                "ready",
                "--port",
                str(port),
                "--model",
                plan.release.served_model_name,
                "--timeout",
                str(plan.settings.runtime_ready_timeout_s),
            )
            # A colour that never became ready is stopped: it served nothing, so nothing is
            # kept warm, and a crash loop would hold its port and memory and race the next
            # deploy's restart of the same colour.
            + f" || {{ journalctl -u {quote(unit_name(colour))} -n 30 --no-pager >&2; "
            f"systemctl stop {quote(unit_name(colour))}; exit 1; }}"
        ],
    )
    server.shell(
        name=f"{colour}: record release {plan.release.id} in {STATE_FILE}",
        commands=[
            runtimectl(
                "record",
                "--colour",
                colour,
                "--release",
                json.dumps(plan.release.summary(), sort_keys=True),
            )
        ],
    )
