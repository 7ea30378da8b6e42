"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input: says what was wrong and what is allowed."""

    exit_status = 2


class CatalogError(Exception):
    """A packaged or user-supplied catalog file breaks its schema."""
