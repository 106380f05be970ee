"""The `waypost` command: the group (``base``) and the modules that register their commands on
it (``commands``, ``deliverability``, ``admin``, ``dmarc``, ``doctor``, ``drill``, ``operator``,
``people``, ``readiness``)."""

from waypost.cli import admin, commands, deliverability, dmarc, doctor, drill, operator, people, readiness  # noqa: F401  (each registers its commands)
from waypost.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="waypost")
