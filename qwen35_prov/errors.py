"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input: says what was wrong and what is allowed."""

    exit_status = 2


class CatalogError(Exception):
    """A packaged or user-supplied catalog file breaks its schema."""


class Interrupted(UserError):
    """Ctrl-C in the middle of work that changes hosts: says what was left and how to go on."""

    exit_status = 130
