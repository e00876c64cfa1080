"""The host-side tools behind one entry point: ``python3 onhost.pyz TOOL ARGS...``.

Each tool is imported only when it is asked for, so a readiness probe does not pay
for loading the puller.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# tool -> module whose ``main(argv) -> int`` runs it
TOOLS = {
    "pull": "llmhost.onhost.pull.cli",
    "runtimectl": "llmhost.onhost.runtimectl",
    "soak": "llmhost.onhost.soak",
    "audit-exporter": "llmhost.onhost.auditexporter",
    "gpu-exporter": "llmhost.onhost.gpuexporter",
    "eval-drift": "llmhost.onhost.evaldrift",
    "gpu-check": "llmhost.onhost.gpucheck",
    "fingerprint": "llmhost.onhost.fingerprint",
    "edge-quota": "llmhost.onhost.edgequota",
}
USAGE = f"usage: onhost.pyz {{{','.join(TOOLS)}}} [ARGS...]  (TOOL --help for each)"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not arguments else sys.stdout)
        return 2 if not arguments else 0
    tool, rest = arguments[0], arguments[1:]
    if tool not in TOOLS:
        print(f"onhost.pyz: unknown tool {tool!r}\n{USAGE}", file=sys.stderr)
        return 2
    run: int = importlib.import_module(TOOLS[tool]).main(rest)
    return run
