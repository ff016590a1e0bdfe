"""taskstream: the CLI, settings and the embedded stack that runs every process in one command."""
