"""The `llmhost` command: testbed, inventory checks, deploys and the end-to-end demo.

One module per command group; this one only builds the top-level group and
registers them. Each module imports its heavy dependencies inside its commands,
so `llmhost --help` loads none of them.
"""

from __future__ import annotations

import click

from llmhost import __version__
from llmhost.cli import config, deploy, keys, models, rebuild, residency, runtimes, soak, testbed
from llmhost.cli.errors import LlmhostError, LlmhostFailure, LlmhostGroup
from llmhost.messages import FORMATS, use_format

__all__ = ["LlmhostError", "LlmhostFailure", "main"]


@click.group(cls=LlmhostGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmhost")
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    envvar="LLMHOST_LOG_FORMAT",
    show_default=True,
    help="What goes to stderr: lines for a person, or one JSON object per line "
    "(time, level, message, and host/key/fix where known; pyinfra's output too). "
    "stdout keeps each command's result. [env: LLMHOST_LOG_FORMAT]",
)
def main(log_format: str) -> None:
    """Provision UK/EU machines into a production LLM endpoint, idempotently, with pyinfra.

    \b
    A deploy converges every host of an inventory, role by role:
      pyinfra inventories/production.py deploy/site.py
    or, with the inventory checked first (no host contacted on bad input):
      llmhost deploy inventories/production.py

    \b
    Try the whole path on a throwaway local host:
      llmhost demo
    """
    use_format(log_format)


COMMANDS: tuple[click.Command, ...] = (
    deploy.check,
    deploy.deploy,
    deploy.bootstrap,
    deploy.status,
    deploy.rollback,
    rebuild.rebuild,
    rebuild.fingerprint,
    rebuild.lock_packages,
    deploy.demo,
    residency.residency,
    models.models,
    runtimes.runtimes,
    keys.keys,
    soak.soak,
    testbed.testbed,
    config.config,
)
for _command in COMMANDS:
    main.add_command(_command)
