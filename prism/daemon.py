"""``prismd``: the Prism node daemon (not built yet).

The daemon will run a Raft node and a SWIM member over real sockets and serve the HTTP API
that ``prismctl`` talks to. The Raft driver and the HTTP API come in later issues; until
then ``prismd`` says so and exits with code 2 instead of pretending to run.
"""

from __future__ import annotations

import sys
from typing import NoReturn

USAGE = "usage: prismd --serf=ADDR:PORT --api=ADDR:PORT --name=NAME [--join=ADDR:PORT]"
NOT_BUILT = (
    "prismd: the daemon is not built yet: the Raft driver and the HTTP API come in later "
    "issues. Use 'prismctl sim' to run Prism's Raft on a simulated cluster."
)
EXIT_NOT_BUILT = 2


def main() -> NoReturn:
    print(USAGE, file=sys.stderr)
    print(NOT_BUILT, file=sys.stderr)
    sys.exit(EXIT_NOT_BUILT)


if __name__ == "__main__":
    main()
