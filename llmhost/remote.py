"""Commands run on some of an inventory's hosts, over pyinfra's own connections, from here."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from llmhost.errors import ActionableError


class Unreachable(ActionableError):
    """A host the command was for could not be reached over SSH."""


@dataclass(frozen=True)
class Answer:
    ok: bool
    stdout: str
    stderr: str


class Connected:
    """The inventory at ``path``, loaded once; hosts are connected on first use."""

    def __init__(self, path: str) -> None:
        from llmhost.inventory import load_inventory

        logging.getLogger("pyinfra").setLevel(logging.CRITICAL)
        self.loaded = load_inventory(path)
        self._tried: set[str] = set()

    @property
    def path(self) -> str:
        return self.loaded.path

    @property
    def inventory(self) -> Any:
        """pyinfra's Inventory of the whole file (every host's data, every group)."""
        return self.loaded.inventory

    def run(self, name: str, command: str) -> Answer:
        """Run ``command`` on host ``name``; Unreachable when it cannot be reached."""
        from pyinfra.context import ctx_host, ctx_state

        state = self.loaded.state
        target = self.inventory.get_host(name)
        self._connect(target)
        if target not in state.activated_hosts:
            raise Unreachable(f"{name} is unreachable over SSH")
        with ctx_state.use(state), ctx_host.use(target):
            ok, output = target.run_shell_command(command)
        return Answer(ok, "\n".join(output.stdout_lines), "\n".join(output.stderr_lines))

    def _connect(self, target: Any) -> None:
        from pyinfra.api.connect import connect_all
        from pyinfra.api.exceptions import PyinfraError
        from pyinfra.context import ctx_state

        if target.name in self._tried:
            return
        self._tried.add(target.name)
        state = self.loaded.state
        state.limit_hosts = [target]
        with ctx_state.use(state), contextlib.suppress(PyinfraError):
            connect_all(state)  # one it could not reach: `run` says so, by name
