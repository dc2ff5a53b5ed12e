"""The one error type for problems the user can fix (bad paths, bad flags, bad files).

The command line turns a `UserError` into a one-line message and exit code 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, with a message that names it and says how to fix it."""
