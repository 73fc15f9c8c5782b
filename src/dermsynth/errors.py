"""Errors that carry a message meant for the user: what is wrong, where, and what to do."""


class DermsynthError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits with status 2."""


class ConfigError(DermsynthError):
    """The configuration file is invalid (wrong key, wrong type, inconsistent values)."""


class InputError(DermsynthError):
    """A raw archive cannot be used as a whole (missing metadata file, missing column, …).

    Problems with single images or rows are not errors: they become rejection entries.
    """
