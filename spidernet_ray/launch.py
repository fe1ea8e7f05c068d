"""Run a search: ``python -m spidernet_ray.launch [--config FILE] [flags]``.

With no flags: local Ray, the bundled digits data, CPU, a small population that finishes in a few
minutes, then the Pareto table. Results land in ``<storage-path>/<name>/`` beside Ray's own
experiment directory (which ``--resume`` and TensorBoard use). Every flag is a field of
``config.SearchConfig``; the search itself is ``tuner.run_search``.
"""

from __future__ import annotations

import os
import sys

from spidernet_ray.config import ConfigError, OneLineArgumentParser, SearchConfig, add_flags, resolve, run_command
from spidernet_ray.data import DataError, list_datasets
from spidernet_ray.genome import GenomeError
from spidernet_ray.rundir import RunDirError


def parse_args(argv: list[str] | None = None):
    parser = OneLineArgumentParser(prog="python -m spidernet_ray.launch", description=__doc__.splitlines()[0],
                                   epilog=f"datasets: {', '.join(list_datasets())}")
    parser.add_argument("--config", help="TOML file whose keys are these flags (underscores); flags override it")
    add_flags(parser)
    return parser.parse_args(argv)


def resolve_config(args) -> SearchConfig:
    """The run description of parsed arguments: defaults <- ``--config`` file <- flags."""
    return resolve(args.config, {k: v for k, v in vars(args).items() if k != "config"})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def search() -> int:
        config = resolve_config(args)
        from spidernet_ray.tuner import run_search  # imports Ray: after the flags are known to be good

        return run_search(config)

    return run_command("spidernet_ray.launch", search, (ConfigError, DataError, GenomeError, RunDirError))


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
