"""The one exception type quantscope raises for bad input or a failed stage."""


class QuantscopeError(Exception):
    """A user-facing error: the message names the input (file, field, model) and what to do.

    The CLI prints it without a traceback and exits with status 2.
    """
