"""The command handlers behind ``raytrain SUBCOMMAND``: one module per command, one layer above the library.

Each module's ``main(positional, args) -> int`` takes the positional arguments and the raw ``key=value`` mapping
(:mod:`raytrain.cli` reads argv and the environment, nothing here does) and returns the exit code. They share one
prologue (:mod:`raytrain.commands.common`): the positional argument, the model named and opened once, the config
made once from what the checkpoint was trained with under the arguments, the device, the run folder. Below them sit
the libraries they drive (``train``, ``tuning``, ``engine``, ``export``, ``data``, ``models``); nothing there imports
this package.
"""
