"""`llmhost config`: the configuration keys of every role, as documentation."""

from __future__ import annotations

import click

from llmhost.paths import REPO_ROOT


@click.group()
def config() -> None:
    """Configuration keys of every role."""


@config.command("reference")
@click.option("--update-readme", is_flag=True, help="Rewrite the README's reference block.")
def config_reference(update_readme: bool) -> None:
    """Print the configuration reference (markdown) generated from the roles' defaults."""
    from llmhost import reference

    if update_readme:
        changed = reference.update_readme(REPO_ROOT / "README.md")
        click.echo("README.md updated" if changed else "README.md already current")
        return
    click.echo(reference.markdown())
