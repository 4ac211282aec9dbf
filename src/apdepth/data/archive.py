"""Read a dataset stored as an uncompressed tar or as an extracted folder, through one interface.

The public evaluation sets are distributed as one uncompressed tar each, with members stored as
``./<relative path>``. Extracting tens of gigabytes only to read them once is wasteful, so the
loaders read members straight out of the tar. For that the tar is scanned once into an index
``relative path -> (byte offset, size)``; a member is then a single positioned read (``os.pread``),
which needs no shared file position. That makes one :class:`TarArchive` safe to use from several
threads, and after ``fork`` (torch DataLoader workers) each process re-opens its own descriptor
(the index travels with the pickled object, the descriptor does not).

Split files
-----------
A split file lists one sample per line as space-separated relative paths (KITTI adds a focal
length); blank lines and lines starting with ``#`` are ignored. :func:`read_split_file` returns
the rows as lists of strings; the dataset classes interpret the columns.
"""

from __future__ import annotations

import os
import tarfile
import threading
from pathlib import Path, PurePosixPath


def normalize_relpath(relpath: str) -> str:
    """Canonical form of a member path: POSIX separators, no leading ``./`` or ``/``."""
    p = str(relpath).replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    p = p.lstrip("/")
    parts = [part for part in p.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise ValueError(f"relative path {relpath!r} must not contain '..'")
    return "/".join(parts)


class Archive:
    """A read-only tree of files addressed by relative POSIX paths (``a/b/c.png``).

    Paths may be given with or without a leading ``./``.
    """

    root: Path

    def open(self, relpath: str) -> bytes:  # pragma: no cover - interface
        """Return the complete content of the file at ``relpath``; ``FileNotFoundError`` if absent."""
        raise NotImplementedError

    def exists(self, relpath: str) -> bool:  # pragma: no cover - interface
        """Whether a regular file exists at ``relpath``."""
        raise NotImplementedError

    def list(self) -> list[str]:  # pragma: no cover - interface
        """All regular files, as sorted normalised relative paths."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


class FolderArchive(Archive):
    """An extracted dataset folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"dataset folder {self.root} does not exist or is not a directory")
        self._listing: list[str] | None = None

    def _path(self, relpath: str) -> Path:
        return self.root / normalize_relpath(relpath)

    def open(self, relpath: str) -> bytes:
        """Return the bytes of ``root/relpath``; ``FileNotFoundError`` naming the folder if absent."""
        path = self._path(relpath)
        if not path.is_file():
            raise FileNotFoundError(f"{relpath!r} not found in dataset folder {self.root}")
        return path.read_bytes()

    def exists(self, relpath: str) -> bool:
        """Whether ``root/relpath`` is a regular file."""
        return self._path(relpath).is_file()

    def list(self) -> list[str]:
        """All regular files under ``root``, as sorted normalised relative paths (listed once, then cached)."""
        if self._listing is None:
            found = []
            for dirpath, _dirnames, filenames in os.walk(self.root):
                rel_dir = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
                for name in filenames:
                    found.append(normalize_relpath(str(rel_dir / name)))
            self._listing = sorted(found)
        return list(self._listing)


class TarArchive(Archive):
    """An uncompressed tar read in place (members with or without a leading ``./``).

    Compressed tars cannot be read by offset and are rejected with a message saying so.
    """

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)
        if not self.root.is_file():
            raise ValueError(f"dataset archive {self.root} does not exist")
        self._index = self._build_index(self.root)
        self._fd: int | None = None
        self._fd_pid: int | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _build_index(path: Path) -> dict[str, tuple[int, int]]:
        with open(path, "rb") as fh:
            magic = fh.read(3)
        if magic[:2] == b"\x1f\x8b" or magic == b"BZh" or magic[:3] == b"\xfd7z":
            raise ValueError(
                f"{path} is a compressed tar; extract it or repack it uncompressed "
                "(members are read by byte offset, which compression prevents)"
            )
        index: dict[str, tuple[int, int]] = {}
        links: dict[str, str] = {}
        try:
            # "r:" = uncompressed only; streaming over the headers is enough, data is skipped
            with tarfile.open(path, mode="r:") as tar:
                for member in tar:
                    name = normalize_relpath(member.name)
                    if member.isreg():
                        if member.issparse():
                            raise ValueError(f"{path}: sparse member {member.name!r} is not supported")
                        index[name] = (member.offset_data, member.size)
                    elif member.issym() or member.islnk():
                        links[name] = member.linkname
        except tarfile.TarError as err:
            raise ValueError(f"{path} is not a readable uncompressed tar ({err})") from err
        # hard links name the archive path; symlinks are relative to the link's folder
        for name, target in links.items():
            candidates = [normalize_relpath(target)]
            parent = str(PurePosixPath(name).parent)
            if parent not in ("", "."):
                try:
                    candidates.insert(0, normalize_relpath(os.path.normpath(f"{parent}/{target}")))
                except ValueError:
                    pass
            for cand in candidates:
                if cand in index:
                    index[name] = index[cand]
                    break
        return index

    def _descriptor(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._fd_pid != pid:
            with self._lock:
                if self._fd is None or self._fd_pid != pid:
                    # after fork the parent's descriptor is shared; open our own instead
                    self._fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    self._fd_pid = pid
        return self._fd

    def open(self, relpath: str) -> bytes:
        """Return the bytes of member ``relpath``; ``FileNotFoundError`` naming the archive if absent."""
        key = normalize_relpath(relpath)
        try:
            offset, size = self._index[key]
        except KeyError:
            raise FileNotFoundError(f"{relpath!r} not found in archive {self.root}") from None
        fd = self._descriptor()
        chunks = []
        done = 0
        while done < size:
            chunk = os.pread(fd, size - done, offset + done)
            if not chunk:
                raise OSError(f"{self.root}: archive truncated while reading {relpath!r}")
            chunks.append(chunk)
            done += len(chunk)
        return b"".join(chunks)

    def exists(self, relpath: str) -> bool:
        """Whether the archive holds a regular file at ``relpath`` (False for an invalid path)."""
        try:
            return normalize_relpath(relpath) in self._index
        except ValueError:
            return False

    def list(self) -> list[str]:
        """All regular-file members, as sorted normalised relative paths."""
        return sorted(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_fd_pid"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_fd_pid", None) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass


def open_archive(path: str | os.PathLike) -> Archive:
    """Open ``path`` as a :class:`FolderArchive` (a directory) or a :class:`TarArchive` (a file).

    If ``path`` does not exist but ``path`` + ``.tar`` or ``path`` without ``.tar`` does, that is
    used, so ``nyuv2/nyu_labeled_extracted`` and ``nyuv2/nyu_labeled_extracted.tar`` are equivalent.
    """
    p = Path(path)
    if not p.exists():
        alternatives = [p.with_name(p.name + ".tar")]
        if p.suffix == ".tar":
            alternatives.append(p.with_suffix(""))
        for alt in alternatives:
            if alt.exists():
                p = alt
                break
        else:
            raise ValueError(f"dataset path {path} does not exist (neither a folder nor a .tar)")
    if p.is_dir():
        return FolderArchive(p)
    return TarArchive(p)


def read_split_file(path: str | os.PathLike) -> list[list[str]]:
    """Rows of a split file: one sample per line, whitespace-separated fields."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"split file {p} does not exist")
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rows.append(line.split())
    if not rows:
        raise ValueError(f"split file {p} lists no samples")
    return rows
