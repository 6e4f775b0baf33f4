"""What a build stopped by a signal reports (the signal handling itself: :mod:`schemas.stop`, shared with
``train``)."""
from __future__ import annotations

from schemas.stop import EXIT_CODES


class Interrupted(Exception):
    """A build stopped by a signal after committing every finished sample.

    ``committed``: samples this run committed; ``in_flight``: samples started
    and not finished, not kept (the rerun does them). :meth:`line` is what the
    command prints; :attr:`exit_code` is 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, signum: int, committed: int, in_flight: int):
        super().__init__(self.line_for(committed, in_flight))
        self.signum, self.committed, self.in_flight = signum, committed, in_flight

    @staticmethod
    def line_for(committed: int, in_flight: int) -> str:
        return (f"interrupted: {committed} committed, {in_flight} in flight not kept; "
                "rerun the same command to continue")

    def line(self) -> str:
        return self.line_for(self.committed, self.in_flight)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + self.signum)
