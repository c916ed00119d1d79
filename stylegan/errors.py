"""The one exception type for bad user input: jobs print its message as a single line and exit non-zero."""


class UserError(Exception):
    """Bad input (a file, a field, a flag). The message names what is wrong and how to fix it."""
