"""One module per command group; each exposes functions that take parsed arguments and return
an exit code. `daemoneye.cli` only parses and dispatches."""
