"""Load a pyinfra inventory on the control machine, without connecting to any host.

pyinfra happily runs an inventory that resolves to no hosts (a typo'd path, a
``--limit`` that matches nothing) and exits 0 having done nothing; it ignores a
group whose entries are not hosts (with a warning nobody reads), and merges a
host listed in two places without a word. llmhost's entry points load the
inventory here first and refuse all of that, with the file and line where it can,
so bad input fails before any host is contacted and never as a traceback.
"""

from __future__ import annotations

import logging
import traceback
from collections import defaultdict
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError
from llmhost.paths import REPO_ROOT


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: tuple[str, ...]
    data: Any  # pyinfra HostData: `.get(key, default)`, with group and global data merged
    host_data: dict[str, Any]  # what the inventory sets on this host itself


@dataclass(frozen=True)
class LoadedInventory:
    path: str
    inventory: Any  # pyinfra Inventory (not connected)
    state: Any  # the pyinfra State it was loaded in
    hosts: list[InventoryHost]  # after --limit


def load_hosts(inventory: str, limit: tuple[str, ...] = ()) -> list[InventoryHost]:
    """The hosts ``inventory`` resolves to (after ``limit``); never an empty list."""
    return load_inventory(inventory, limit).hosts


def load_inventory(
    inventory: str, limit: tuple[str, ...] = (), data: dict[str, Any] | None = None
) -> LoadedInventory:
    """Load ``inventory`` with pyinfra's own loader, after checking what its file defines;
    ``data`` overrides every host's, as pyinfra's ``--data`` does."""
    from pyinfra.api import Config, State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    if not Path(inventory).is_file():
        raise ConfigError(
            f"inventory {inventory!r} is not a file",
            key=None,
            fix="pass the path of an inventory, e.g. inventories/example_uk_eu.py",
        )
    logging.getLogger("pyinfra").setLevel(logging.ERROR)
    state = State()
    with ctx_state.use(state):  # pyinfra executes inventory files inside a state
        check_groups(inventory, inventory_groups(inventory))
        loaded = _run_user_code(
            inventory, lambda: make_inventory(inventory, override_data=data, cwd=str(REPO_ROOT))
        )
    state.init(loaded, Config())
    hosts = [
        InventoryHost(
            name=host.name,
            groups=tuple(host.groups),
            data=host.data,
            host_data=dict(loaded.get_host_data(host.name)),
        )
        for host in loaded
    ]
    if limit:
        hosts = [h for h in hosts if any(fnmatch(h.name, p) or p in h.groups for p in limit)]
    if not hosts:
        where = f" with --limit {' '.join(limit)}" if limit else ""
        raise ConfigError(
            f"inventory {inventory} resolves to no hosts{where}",
            key=None,
            fix="add hosts to the inventory's groups (or bring the testbed up for "
            "inventories/testbed.py), or correct --limit",
        )
    return LoadedInventory(inventory, loaded, state, hosts)


def _run_user_code(inventory: str, run: Any) -> Any:
    """Run ``run()``, which executes Python the operator wrote; its errors as ConfigError."""
    from pyinfra_cli.exceptions import UnexpectedExternalError

    try:
        return run()
    except ConfigError:
        raise
    except UnexpectedExternalError as wrapped:
        raise user_code_error(wrapped.exception, wrapped.filename) from None
    except Exception as error:  # pyinfra's own checks of what the file defined
        raise user_code_error(error, inventory) from None


def user_code_error(error: BaseException, filename: str) -> ConfigError:
    """The error with the file and line of the operator's code it came from."""
    if isinstance(error, SyntaxError):
        where = f"{error.filename or filename}:{error.lineno}"
        return ConfigError(
            f"{where}: invalid Python ({error.msg})",
            key=None,
            fix="correct the syntax at that line (`python3 -m py_compile FILE` shows it too)",
        )
    if isinstance(error, UnicodeDecodeError):
        return ConfigError(
            f"{filename} is not UTF-8 text ({error.reason} at byte {error.start})",
            key=None,
            fix="save the file as UTF-8",
        )
    # The innermost frame in the inventory's own directory (the file, its group_data/).
    directory = Path(filename).resolve().parent
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename).resolve().is_relative_to(directory)
    ]
    line = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else filename
    return ConfigError(
        f"{line}: {type(error).__name__}: {error}",
        key=None,
        fix="correct the inventory or group data file at that line",
    )


def inventory_groups(inventory: str) -> dict[str, Any]:
    """What the inventory file defines at module level that pyinfra would read as groups.

    pyinfra reads lists and tuples; names starting with ``_`` are private.
    """
    from pyinfra_cli.util import exec_file

    defined = _run_user_code(inventory, lambda: exec_file(inventory, return_locals=True))
    return {
        name: value
        for name, value in defined.items()
        if not name.startswith("_") and isinstance(value, list | tuple)
    }


def check_groups(inventory: str, groups: dict[str, Any]) -> None:
    """Each group is hosts (``name`` or ``(name, {data})``), each host listed once per group,
    and a host listed in several groups with data is given the same values by all of them."""
    seen: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for group, value in groups.items():
        members = _group_members(inventory, group, value)
        names = [name for name, _ in members]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigError(
                f"inventory {inventory}: group `{group}` lists {twice[0]} twice",
                key=None,
                fix="list each host once in a group (pyinfra merges the entries silently)",
                host=twice[0],
            )
        for name, data in members:
            seen[name].append((group, data))
    for name, places in seen.items():
        _check_host_entries_agree(inventory, name, places)


def _group_members(inventory: str, group: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    fix = (
        f'write `{group} = ["host", ("host", {{...data}}), ...]` or '
        f"`{group} = ([...hosts], {{...group data}})`; name a variable that is not a group "
        f"with a leading underscore (`_{group}`)"
    )
    hosts = value
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[0], list) or not isinstance(value[1], dict):
            raise ConfigError(
                f"inventory {inventory}: `{group}` is a tuple but not (hosts, data)",
                key=None,
                fix=fix,
            )
        hosts = value[0]
    members: list[tuple[str, dict[str, Any]]] = []
    for index, item in enumerate(hosts):
        if isinstance(item, str) and item:
            members.append((item, {}))
        elif (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and item[0]
            and isinstance(item[1], dict)
        ):
            members.append((item[0], item[1]))
        else:
            raise ConfigError(
                f"inventory {inventory}: entry {index} of `{group}` is {item!r}, not a host",
                key=None,
                fix=fix,
            )
    return members


def _check_host_entries_agree(
    inventory: str, name: str, places: list[tuple[str, dict[str, Any]]]
) -> None:
    with_data = [(group, data) for group, data in places if data]
    for index, (group, data) in enumerate(with_data):
        for other, other_data in with_data[index + 1 :]:
            for key in sorted(set(data) & set(other_data)):
                if data[key] != other_data[key]:
                    raise ConfigError(
                        f"inventory {inventory}: `{group}` gives {data[key]!r} and "
                        f"`{other}` gives {other_data[key]!r}; pyinfra would keep one silently",
                        key=key,
                        fix=f"give {name} its data in one place",
                        host=name,
                    )
