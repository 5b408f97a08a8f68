"""``tritonllm generate``, ``health``, ``models``: the client library on the command line."""

from __future__ import annotations

import click

#: Registered by :mod:`tritonllm.cli`.
client_commands: list[click.Command] = []
