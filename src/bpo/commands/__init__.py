"""One module per `bpo` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
