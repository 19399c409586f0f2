"""The one exception type for problems a user can cause and fix."""


class InputError(ValueError):
    """Bad input from a user: the message says what is wrong and how to fix it.

    The dashboard shows it with ``st.error``; the CLI prints it on one line and exits 2.
    """


class Cancelled(Exception):
    """Raised inside a task when its caller asked it to stop (``should_stop()`` became true); the task stops
    between two units of work without writing a result."""
