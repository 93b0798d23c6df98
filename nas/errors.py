"""Errors that reach the user as one line (the CLI prints them and exits 2)."""


class UserError(Exception):
    """Bad input from the user: a name, a file, a value. The message says what, where and how to fix.

    The CLI prints ``error: <message>`` and exits 2; ``--debug`` adds the traceback.
    """


class MissingKeysError(UserError):
    """A latency table lacks entries that an architecture needs."""

    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys
