"""Exceptions shared by every layer.

``UserError`` is a mistake the user can fix (bad option, missing path); the CLI
prints its message as one line and exits 2. ``SampleError`` is a bad sample
inside a dataset; pipelines turn it into a :class:`schemas.FailureRecord`.
"""


class UserError(Exception):
    """A problem with what the user asked for; the message says what to do."""


class SampleError(Exception):
    """One sample cannot be processed; ``reason`` is a short stable tag."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
