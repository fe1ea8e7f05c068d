"""Write a run's report, or check that its record is whole.

    python -m spidernet_ray.report RUN_DIR [--hv-latency-ms 20]   # report.md and figures under report/
    python -m spidernet_ray.report RUN_DIR --check                 # one line per violation, exit 1 if any

The report is spidernet_ray.reporting's, the check spidernet_ray.verify's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spidernet_ray.config import OneLineArgumentParser, run_command
from spidernet_ray.reporting import ReportError, write_report


def main(argv: list[str] | None = None) -> int:
    p = OneLineArgumentParser(prog="python -m spidernet_ray.report", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a search's run directory (<storage-path>/<name>)")
    p.add_argument("--hv-latency-ms", type=float, help="latency of the hypervolume reference point")
    p.add_argument("--check", action="store_true",
                   help="check that the run's record is whole instead (rows, genealogy, archive, tables, "
                   "checkpoints): one line per violation and exit 1, or one line of ok")
    args = p.parse_args(argv)

    def report() -> int:
        if not Path(args.run_dir).is_dir():
            raise ReportError(f"run directory {args.run_dir} does not exist")
        if args.check:
            return check(args.run_dir)
        print(write_report(args.run_dir, args.hv_latency_ms))
        return 0

    return run_command("spidernet_ray.report", report, (ReportError,))


def check(run_dir: str) -> int:
    from spidernet_ray.verify import check_run

    result = check_run(run_dir)
    print("\n".join(result.violations) if result.violations else result.summary)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
