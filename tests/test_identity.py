"""Code identity and content digests: what a resumed checkpoint and a table's caption are checked against."""

import hashlib
from pathlib import Path

import pytest

from segbench.infra import identity
from segbench.infra.tables import write_table


@pytest.fixture
def package(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "sub" / "b.py").write_text("B = 2\n")
    (tmp_path / "notes.txt").write_text("not code\n")
    monkeypatch.setattr(identity, "PACKAGE_DIR", tmp_path)
    identity.code_identity.cache_clear()
    yield tmp_path
    identity.code_identity.cache_clear()


def test_the_code_identity_is_the_version_and_a_digest_of_every_source_file(package):
    first = identity.code_identity()
    version, _, digest = first.partition("+")
    assert version and len(digest) == 16
    (package / "notes.txt").write_text("edited\n")
    identity.code_identity.cache_clear()
    assert identity.code_identity() == first  # not a source file
    (package / "sub" / "b.py").write_text("B = 3\n")
    identity.code_identity.cache_clear()
    assert identity.code_identity() != first


def test_the_code_identity_digests_the_whole_package_not_one_subpackage():
    """A change to a model or to training must change the identity (else an old checkpoint is resumed)."""
    import segbench

    root = Path(segbench.__file__).resolve().parent
    names = {p.relative_to(root).as_posix() for p in identity.sources()}
    assert names == {p.relative_to(root).as_posix() for p in root.rglob("*.py")}
    assert {"__init__.py", "models/unetplusplus.py", "training/train.py", "infra/identity.py"} <= names


def test_sha256sum_follows_the_content_at_the_same_path(tmp_path):
    path = tmp_path / "store.h5"
    path.write_bytes(b"x" * (identity.CHUNK + 5))
    assert identity.sha256sum(path) == hashlib.sha256(b"x" * (identity.CHUNK + 5)).hexdigest()
    path.write_bytes(b"other content")
    assert identity.sha256sum(path) == hashlib.sha256(b"other content").hexdigest()


def test_a_table_of_runs_of_two_code_identities_says_so_in_its_caption(tmp_path):
    rows = [{"net": "a"}]
    same = [{"train": {"code": "0.1.0+aaaa"}}, {"code": "0.1.0+aaaa"}]
    write_table(tmp_path / "same", [("net", "net")], rows, caption="Table", sources=same)
    assert (tmp_path / "same.md").read_text().splitlines()[0] == "Table"
    mixed = [*same, {"train": {"code": "0.1.0+bbbb"}}, {"train": {}}]
    write_table(tmp_path / "mixed", [("net", "net")], rows, caption="Table", sources=mixed)
    assert (tmp_path / "mixed.md").read_text().splitlines()[0] == (
        "Table; runs of 3 code identities (0.1.0+aaaa, 0.1.0+bbbb, unknown): rerun with one version to compare them")
