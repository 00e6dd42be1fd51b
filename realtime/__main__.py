"""`python -m realtime` / `livesr`: live and file mode (realtime.cli), or a subcommand.

Subcommands are dispatched here, above the modules that implement them, so that none of those
modules imports another's entry point.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["profile"]:
        from .profile import main as profile_main

        return profile_main(argv[1:])
    if argv[:1] == ["serve-bench"]:
        from .serve_bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["serve"]:
        from .serve import main as serve_main

        return serve_main(argv[1:])
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
