"""The `waypost` command: the group (``base``) and the modules that register their commands on
it (``commands``, ``aws``, ``deliverability``, ``admin``, ``dmarc``, ``doctor``, ``drill``, ``operator``,
``people``, ``readiness``, ``retention``, ``zones``)."""

import waypost.cli.aws  # noqa: F401  (registers `waypost aws`)
import waypost.cli.relay  # noqa: F401  (registers `waypost relay`)
import waypost.cli.retention  # noqa: F401  (registers `waypost retention`)
import waypost.cli.zones  # noqa: F401  (registers `waypost person zone`)
from waypost.cli import admin, commands, deliverability, dmarc, doctor, drill, operator, people, readiness  # noqa: F401  (each registers its commands)
from waypost.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="waypost")
