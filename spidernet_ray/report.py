"""Write a run's report: ``python -m spidernet_ray.report RUN_DIR [--hv-latency-ms 20]``.

``report.md`` and its figures under ``report/`` (spidernet_ray.reporting); the path is printed.
"""

from __future__ import annotations

import sys

from spidernet_ray.config import OneLineArgumentParser, run_command
from spidernet_ray.reporting import ReportError, write_report


def main(argv: list[str] | None = None) -> int:
    p = OneLineArgumentParser(prog="python -m spidernet_ray.report", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a search's run directory (<storage-path>/<name>)")
    p.add_argument("--hv-latency-ms", type=float, help="latency of the hypervolume reference point")
    args = p.parse_args(argv)

    def report() -> int:
        print(write_report(args.run_dir, args.hv_latency_ms))
        return 0

    return run_command("spidernet_ray.report", report, (ReportError,))


if __name__ == "__main__":
    sys.exit(main())
