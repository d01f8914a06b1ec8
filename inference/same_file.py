"""Which gallery entries are the very file a query is: the identity of a file, not the spelling of its path.

One image reached through a symlink, a hard link, ``..`` or another
relative root has several paths; comparing path strings returned such a
query as its own nearest neighbour at distance 0. An existing file is
identified by its device and inode (``os.stat`` follows links); a path that
does not exist here (an embedding file made on another machine) by its
resolved real path.
"""
import os

import numpy as np


def file_identity(path):
    """``("inode", device, inode)`` of an existing file, else ``("path", real path)``.

    A path through a folder that does not exist (``missing/../a.png``) is
    resolved first: the system refuses it, ``os.path.realpath`` does not.
    """
    status = existing_status(path)
    if status is None:
        real_path = os.path.realpath(path)
        status = existing_status(real_path)
        if status is None:
            return ("path", real_path)
    return ("inode", status.st_dev, status.st_ino)


def existing_status(path):
    try:
        return os.stat(path)
    except OSError:
        return None


def own_gallery_indices(query_paths, gallery_paths):
    """``(num_queries, m)`` int64: per query, the gallery indices of its own file, padded with -1.

    ``m`` is at least 1; it is more where the gallery holds one file under
    several paths.
    """
    query_identities = [file_identity(path) for path in query_paths]
    wanted = set(query_identities)
    positions = {}
    for index, path in enumerate(gallery_paths):
        identity = file_identity(path)
        if identity in wanted:
            positions.setdefault(identity, []).append(index)
    rows = [positions.get(identity, []) for identity in query_identities]
    table = np.full((len(rows), max([1] + [len(row) for row in rows])), -1, dtype=np.int64)
    for query, row in enumerate(rows):
        table[query, :len(row)] = row
    return table
