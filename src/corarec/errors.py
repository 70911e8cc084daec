"""One exception type for every problem a user can fix (bad files, unknown ids, mismatched runs).

The CLI prints such errors as a single line (``error: ...``) and exits with status 2; anything
else is a bug and keeps its traceback.
"""


class CorarecError(Exception):
    """A user-facing error: the message says what is wrong and where (file, line, id)."""
