"""Errors that describe bad input (config, data, files): the CLI prints them as one clear line."""


class InputError(ValueError):
    """Bad input the user can fix; the message names the problem."""
