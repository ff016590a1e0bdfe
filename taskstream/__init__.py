"""taskstream: the CLI, settings and the embedded stack that runs every process in one command."""

from importlib.metadata import version

__version__ = version("taskstream")
