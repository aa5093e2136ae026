"""The one exception the command line turns into a clear message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a file, a name, a value. The message names it and the problem."""
