"""One module per ``mrhd`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
