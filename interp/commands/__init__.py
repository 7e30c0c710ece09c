"""Command-line subcommands, one module per stage (see interp.cli.STAGE_MODULES)."""
