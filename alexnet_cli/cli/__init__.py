"""The `alexnet` command: one module per subcommand, wired together in `app.py`."""
