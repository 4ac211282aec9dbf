import gzip
import pickle
import tarfile

import pytest

from _dataset_layouts import both, write_tar
from apdepth.data.archive import FolderArchive, TarArchive, normalize_relpath, open_archive, read_split_file

FILES = {"a/b/one.bin": b"\x00\x01payload", "top.txt": b"hello", "a/empty.dat": b""}


def test_tar_members_really_have_dot_prefix(tmp_path):
    paths = both(tmp_path, "ds", FILES)
    with tarfile.open(paths["tar"]) as tar:
        assert sorted(tar.getnames()) == sorted("./" + k for k in FILES)


@pytest.mark.parametrize("kind", ["tar", "folder"])
def test_open_exists_list(tmp_path, kind):
    arc = open_archive(both(tmp_path, "ds", FILES)[kind])
    assert isinstance(arc, TarArchive if kind == "tar" else FolderArchive)
    assert arc.list() == sorted(FILES)
    for rel, data in FILES.items():
        assert arc.open(rel) == data
        assert arc.open("./" + rel) == data
        assert arc.exists(rel) and arc.exists("./" + rel)
    assert not arc.exists("a/b/missing.bin")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        arc.open("a/b/missing.bin")


def test_tar_without_dot_prefix_and_alternate_names(tmp_path):
    path = write_tar(tmp_path / "plain.tar", FILES, dot_prefix=False)
    arc = open_archive(tmp_path / "plain")  # the ".tar" is found on its own
    assert arc.open("./a/b/one.bin") == FILES["a/b/one.bin"]
    assert arc.root == path


def test_tar_survives_pickling_and_reopens(tmp_path):
    arc = open_archive(both(tmp_path, "ds", FILES)["tar"])
    assert arc.open("top.txt") == b"hello"
    clone = pickle.loads(pickle.dumps(arc))
    assert clone._fd is None
    assert clone.open("a/b/one.bin") == FILES["a/b/one.bin"]


def test_compressed_tar_is_refused_with_reason(tmp_path):
    raw = write_tar(tmp_path / "x.tar", FILES).read_bytes()
    gz = tmp_path / "x.tar.gz"
    gz.write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match="compressed tar"):
        open_archive(gz)


def test_missing_path_and_dotdot(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        open_archive(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"\.\."):
        normalize_relpath("a/../../etc/passwd")
    assert normalize_relpath("./a//b/./c.png") == "a/b/c.png"


def test_read_split_file(tmp_path):
    f = tmp_path / "split.txt"
    f.write_text("# comment\n\na.png b.png 721.5\n  c.png None\n")
    assert read_split_file(f) == [["a.png", "b.png", "721.5"], ["c.png", "None"]]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no samples"):
        read_split_file(tmp_path / "empty.txt")
