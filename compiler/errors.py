"""The one exception type users see. Its message is a single line: what is wrong and what to do."""


class BitnetError(Exception):
    """A user-facing error: the CLI prints `error: <message>` and exits with code 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
