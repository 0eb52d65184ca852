"""The one exception type for bad user input.

Anything a user can get wrong (a model name, a budget, a path, a config value)
raises `UserError` with a message that says what was wrong and how to fix it.
The CLI turns it into exit code 2; library callers can catch it or its base
`ValueError`.
"""


class UserError(ValueError):
    """Bad input: the message names the offending value and the valid choices."""


def choices_error(what: str, value, choices) -> UserError:
    """`UserError` for a value outside a known set, listing the set."""
    shown = ", ".join(str(c) for c in choices)
    return UserError(f"unknown {what} {value!r}; valid choices: {shown}")
