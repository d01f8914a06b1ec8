"""The one reader of the text files a user gives: UTF-8, or one sentence naming the file and line.

``Path.read_text()`` decodes with the locale's encoding and raises a bare
``UnicodeDecodeError`` on a file that is not text (a JPEG renamed to
``.txt``, a list saved as UTF-16); every config, dataset list, annotation
and run-folder record is read here instead (a JSON record through ``read_json_object``).
"""
import json
from pathlib import Path

from utils.errors import UserInputError


def read_text(path, what):
    """The text of ``path``; ``what`` names the file for the sentence (e.g. 'Config file')."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a pipe or a device (/dev/zero) may block or never end
        raise UserInputError(f"The {what} {path} is not a regular file (a folder, pipe or device); give the path "
                             "of a file.")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserInputError(f"The {what} {path} cannot be read ({error.strerror or error}); check the "
                             "path and its permissions.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserInputError(f"The {what} {path} is not UTF-8 text (line {line} holds the byte "
                             f"0x{data[error.start]:02x}); give the original file, or save it as UTF-8.") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise UserInputError(f"The {what} {path} is not a text file (line {line} holds a NUL byte); give the "
                             "original file.")
    return text


def read_json_object(path, what):
    """The JSON object (a dict) in ``path``; not UTF-8, not JSON or not an object is one sentence naming
    the file (and the line)."""
    text = read_text(path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserInputError(f"The {what} {path} is not valid JSON (line {error.lineno}: {error.msg}); restore "
                             "the file, or remove it.") from None
    except RecursionError:
        raise UserInputError(f"The {what} {path} nests too deeply to be a record of ours; restore the file, or "
                             "remove it.") from None
    if not isinstance(value, dict):
        raise UserInputError(f"The {what} {path} holds a JSON {type(value).__name__}, not an object; restore the "
                             "file, or remove it.")
    return value
