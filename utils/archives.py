"""Zip archives (``.pth`` and ``.npz`` files) checked record by record against their stored CRC-32.

Neither reader checks what it reads: ``torch.load`` never compares a
record's CRC-32, and NumPy reads exactly the bytes an ``.npy`` header
announces, so a bit flipped in that header (``shape (4, 512)`` read as
``(4, 412)``) makes it stop before the end of the record, where Python's zip
reader would have compared the checksum. A file damaged on a disk or in a
download would be partly used; every record is checked here first.
"""
import zipfile


class DamagedArchive(Exception):
    """The archive's structure or a record's checksum is damaged; the message says which."""


def check_zip_records(path):
    """Every record of the zip archive ``path`` matches its stored CRC-32; a file that is no zip passes."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError) as error:
        raise DamagedArchive(f"a damaged zip archive: {type(error).__name__}") from None
    if damaged is not None:
        raise DamagedArchive(f"its record {damaged} does not match its stored checksum, so the file changed after "
                             "it was written")
