"""Plan a deploy for one fake host whose facts are given, without connecting anywhere.

pyinfra operations decide their commands from facts at prepare time, so a role
can be tested the way pyinfra tests its own operations: given these facts,
expect these commands (or none: a noop). Facts not given take sensible values
for a fresh Debian 12 host: nothing installed, no files, no units.

A fact is given by its class name, as one of:

- a plain value: the fact has it whatever its arguments;
- ``per_argument({"path=/etc/x": value, ...})``: a value per argument set, the way
  pyinfra's operation tests give facts (``"files.File": {"path=/x": {...}}``); any other
  arguments get the fact's ``default()``;
- a callable, for a rule no table can list (``Which`` of any command): it is called
  with the fact's arguments.

The one-command facts of ``roles._common.checked`` (``FileSummary``, ``UnitSummary``,
``PackageStatus``, ``GroupPresent``, ``UserSummary``, ``Leftovers``) follow from pyinfra's own
(``File`` with ``Sha1File``, ``SystemdStatus`` with ``SystemdEnabled``, ``DebPackages``,
``Groups``, ``Users`` with ``Directory``; ``File``, ``Link`` and ``Directory`` for whether a
path exists) unless a test gives them: a test describes the host once, and
the check and pyinfra's operation it hands over to see the same host.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from pyinfra.api import Config, Inventory, State
from pyinfra.api.arguments import all_global_arguments
from pyinfra.api.deploy import add_deploy
from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_inventory, ctx_state
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Directory, File, Link, Sha1File
from pyinfra.facts.server import Groups, Users
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

# Roles make a CA and credentials on first use: keep them out of the repository.
SECRETS_DIR = tempfile.mkdtemp(prefix="llmhost-unit-secrets-")

FRESH_DEBIAN_12: dict[str, Any] = {
    "Os": "Linux",
    "Which": lambda command: f"/usr/bin/{command}",
    "Users": {},
    "Groups": [],
    "DebPackages": {},
    "SystemdStatus": {},
    "SystemdEnabled": {},
    "Platform": {
        "pid1": "systemd",
        "os_id": "debian",
        "os_version": "12",
        "os_codename": "bookworm",
        "container": "none",
        "ssh_client": "192.0.2.10",
        "sshd_includes_dropins": True,
    },
}

GLOBAL_ARGUMENTS = frozenset(name for name, _ in all_global_arguments())
# "a=1, b=2": split before each "name=", so a value may hold a comma
KEY_SEPARATOR = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*=)")


class PerArgument:
    """A fact's values by argument set; see ``per_argument``."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = {self.parse_key(key): value for key, value in values.items()}

    @staticmethod
    def parse_key(key: str) -> tuple[tuple[str, str], ...]:
        """``"a=1, b=/x"`` -> ``(("a", "1"), ("b", "/x"))``; names sorted, each once."""
        pairs = []
        for part in KEY_SEPARATOR.split(key.strip()) if key.strip() else []:
            name, equals, value = part.partition("=")
            if not equals or not name.strip().isidentifier():
                raise ValueError(f"per_argument key {key!r}: {part!r} is not name=value")
            pairs.append((name.strip(), value))
        names = [name for name, _ in pairs]
        if names != sorted(set(names)):
            raise ValueError(f"per_argument key {key!r}: name each argument once, sorted by name")
        return tuple(pairs)

    def lookup(self, cls: type, arguments: dict[str, Any]) -> Any:
        """The value given for exactly these arguments, else the fact's default."""
        parameters = inspect.signature(cls().command).parameters
        defaults = {
            name: str(p.default)
            for name, p in parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        required = set(parameters) - set(defaults)
        for key in self.values:
            names = {name for name, _ in key}
            if names - set(parameters) or required - names:
                raise ValueError(
                    f"per_argument key {key_string(key)!r} for {cls.__name__}: "
                    f"{cls.__name__}.command takes {sorted(parameters)}, "
                    f"of which {sorted(required)} are required"
                )

        def without_defaults(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
            return tuple((name, value) for name, value in pairs if defaults.get(name) != value)

        wanted = without_defaults(tuple(sorted((k, str(v)) for k, v in arguments.items())))
        for key, value in self.values.items():
            if without_defaults(key) == wanted:
                return value
        return cls.default()  # type: ignore[attr-defined]


def key_string(key: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{name}={value}" for name, value in key)


def per_argument(values: Mapping[str, Any]) -> PerArgument:
    """A fact given per argument set: ``{"path=/etc/x": value}``, other arguments: default.

    A key names the fact's keyword arguments as ``name=value`` pairs, comma-separated and
    sorted by name when there are several (``"path=/x, user=root"``); an argument left at its
    default may be left out. A key that could never match (an argument the fact does not take,
    a required one missing) fails the lookup rather than passing silently.
    """
    return PerArgument(values)


def fact_arguments(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The fact's own arguments, as pyinfra gives them to ``command`` (global ones dropped).

    An argument the fact does not take raises TypeError, as it would against a real host.
    """
    own = {key: value for key, value in kwargs.items() if key not in GLOBAL_ARGUMENTS}
    try:
        bound = inspect.signature(cls().command).bind(*args, **own)
    except TypeError as error:
        raise TypeError(f"{cls.__name__} looked up with {args}, {own}: {error}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def fact_value(given: Any, cls: type, arguments: dict[str, Any]) -> Any:
    """What a fact given as a plain value, ``per_argument`` or a callable is for ``arguments``."""
    if isinstance(given, PerArgument):
        return given.lookup(cls, arguments)
    if callable(given):
        return given(**arguments)
    return given


FactReader = Callable[..., Any]  # (fact class, **arguments) -> the fact's value


def file_summary(read: FactReader, path: str) -> dict[str, Any] | None:
    """``FileSummary`` of a host whose ``File`` and ``Sha1File`` are given: ``None`` unless
    both say a regular file with a known owner, group and mode."""
    found, sha1 = read(File, path=path), read(Sha1File, path=path)
    if not isinstance(found, dict) or not sha1 or {"user", "group", "mode"} - set(found):
        return None
    return {"user": found["user"], "group": found["group"], "mode": found["mode"], "sha1": sha1}


def unit_summary(read: FactReader, unit: str) -> dict[str, str]:
    """``UnitSummary`` of a host whose ``SystemdStatus`` and ``SystemdEnabled`` are given:
    empty (the check hands over) for a unit that neither names."""
    running = read(SystemdStatus, services=[unit])
    enabled = read(SystemdEnabled, services=[unit])
    if unit not in running and unit not in enabled:
        return {}
    return {
        "Id": unit,
        "SubState": "running" if running.get(unit) else "dead",
        "UnitFileState": "enabled" if enabled.get(unit) else "disabled",
    }


def package_status(read: FactReader, packages: list[str]) -> dict[str, str]:
    """``PackageStatus`` of a host whose ``DebPackages`` is given (its last version of each)."""
    installed = read(DebPackages)
    return {name: installed[name][-1] for name in packages if installed.get(name)}


def group_present(read: FactReader, group: str) -> bool:
    """``GroupPresent`` of a host whose ``Groups`` is given."""
    return group in read(Groups)


def user_summary(read: FactReader, user: str) -> dict[str, str] | None:
    """``UserSummary`` of a host whose ``Users`` (and its home's ``Directory``) are given."""
    found = read(Users).get(user)
    if not found:
        return None
    summary = {"home": found["home"], "shell": found["shell"], "group": found["group"]}
    home = read(Directory, path=found["home"])
    if isinstance(home, dict) and {"user", "group"} <= set(home):
        summary.update(home_user=home["user"], home_group=home["group"], home_type="directory")
    return summary


def leftovers(read: FactReader, units: list[str], paths: list[str]) -> dict[str, list[str]]:
    """``Leftovers`` of a host whose systemd facts and path facts are given."""
    running = read(SystemdStatus, services=units)
    enabled = read(SystemdEnabled, services=units)
    return {
        "running": [unit for unit in units if running.get(unit)],
        "enabled": [unit for unit in units if enabled.get(unit)],
        "paths": [
            path
            for path in paths
            if any(read(fact, path=path) not in (None, {}) for fact in (File, Link, Directory))
        ],
    }


DERIVED: dict[str, Callable[..., Any]] = {
    "FileSummary": file_summary,
    "UnitSummary": unit_summary,
    "PackageStatus": package_status,
    "GroupPresent": group_present,
    "UserSummary": user_summary,
    "Leftovers": leftovers,
}


def plan(
    deploy: Callable[[], None],
    data: dict[str, Any],
    facts: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    groups: list[str] | None = None,
    name: str = "host1",
    others: Mapping[str, tuple[dict[str, Any], list[str]]] | None = None,
) -> dict[str, list[str]]:
    """Operation name (without the deploy's prefix) -> the commands it would run, in order.

    An empty list is a noop. Conditional operations (``_if``) list their commands.
    ``name`` "@local" plans for the control machine (pyinfra's local connector).
    ``others``: more hosts of the inventory (name -> (data, groups)), never planned for.
    """
    known = {**FRESH_DEBIAN_12, **(facts or {})}
    data = {"secrets_dir": SECRETS_DIR, **data}

    def read(cls: type, **arguments: Any) -> Any:
        if cls.__name__ in DERIVED and cls.__name__ not in known:
            return DERIVED[cls.__name__](read, **arguments)
        if cls.__name__ not in known:
            return cls.default()  # type: ignore[attr-defined]
        return fact_value(known[cls.__name__], cls, arguments)

    def get_fact(self: Host, cls: type, *args: Any, **kwargs: Any) -> Any:
        return read(cls, **fact_arguments(cls, args, kwargs))

    original = Host.get_fact
    Host.get_fact = get_fact  # type: ignore[method-assign]
    try:
        members = {name: (data, groups or []), **(others or {})}
        in_group: dict[str, list[str]] = {}
        for member, (_, member_groups) in members.items():
            for group in member_groups:
                in_group.setdefault(group, []).append(member)
        inventory = Inventory(
            ([(member, member_data) for member, (member_data, _) in members.items()], {}),
            **{group: (names, {}) for group, names in in_group.items()},
        )
        state = State(inventory, Config(**(config or {})))
        host = inventory.get_host(name)
        with ctx_inventory.use(inventory):
            add_deploy(state, deploy, host=host)
        planned: dict[str, list[str]] = {}
        with ctx_state.use(state), ctx_host.use(host):
            for op_hash in state.get_op_order():
                # "llmhost base | chrony: time sources" -> "chrony: time sources"
                names = [n.split(" | ", 1)[-1] for n in state.op_meta[op_hash].names]
                name = ", ".join(sorted(names))
                op_data = state.get_op_data_for_host(host, op_hash)
                planned[name] = [str(command) for command in op_data.command_generator()]
        return planned
    finally:
        Host.get_fact = original  # type: ignore[method-assign]


def record_calls(
    monkeypatch: Any, module: Any, function: str
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """``module.function``'s calls while a plan runs: operation name -> (its result, kwargs).

    For what a plan does not show: an ``_if`` condition, checked against the operation
    it names once that one is marked complete.
    """
    made: dict[str, tuple[Any, dict[str, Any]]] = {}
    original = getattr(module, function)

    def recording(*args: Any, **kwargs: Any) -> Any:
        made[kwargs["name"]] = (original(*args, **kwargs), kwargs)
        return made[kwargs["name"]][0]

    monkeypatch.setattr(module, function, recording)
    return made
