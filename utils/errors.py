"""The one exception type for problems a user can fix."""


class UserInputError(Exception):
    """Bad input from the user: a config value, a path, a weights file.

    Raised where the bad value enters, with a message of one sentence that
    says what is wrong, where (key or path) and how to fix it. ``train.py``
    prints the message and exits with code 2 instead of a traceback.
    """

    exit_code = 2
