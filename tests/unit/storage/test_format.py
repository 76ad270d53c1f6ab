"""On-store formats: packs carry their own index, roots and manifests are verified."""

from __future__ import annotations

import pytest

from mags.errors import StorageError
from mags.storage.sync import format as fmt


def test_pack_trailer_and_toc_roundtrip() -> None:
    blobs = [(fmt.hash_hex(b"one"), b"one", 3), (fmt.hash_hex(b"two!"), b"two!", 4)]
    data, toc = fmt.build_pack(blobs)
    assert data.startswith(fmt.PACK_MAGIC)
    off, length = fmt.parse_trailer(data[-fmt.TRAILER.size :])
    assert fmt.parse_toc(data[off : off + length]) == toc
    for digest, blob_off, clen, _ulen in toc:
        assert fmt.hash_hex(data[blob_off : blob_off + clen]) == digest
    with pytest.raises(StorageError):
        fmt.parse_trailer(b"x" * fmt.TRAILER.size)


def test_root_is_verified_against_its_id() -> None:
    sid, data = fmt.encode_root({"v": fmt.FORMAT_VERSION, "tree": None, "packs": []})
    assert fmt.decode_root(sid, data)["packs"] == []
    with pytest.raises(StorageError, match="corrupt"):
        fmt.decode_root(sid, data.replace(b"[]", b"[ ]"))
    other_sid, other = fmt.encode_root({"v": 99})
    with pytest.raises(StorageError, match="version"):
        fmt.decode_root(other_sid, other)


def test_manifest_encoding_is_canonical() -> None:
    a = fmt.encode_tree([{"n": "x", "k": "f", "m": 420}])
    b = fmt.encode_tree([{"m": 420, "k": "f", "n": "x"}])
    assert a == b
    odd = "caf\udcff"  # a non-UTF-8 file name, as os.fsdecode gives it
    assert fmt.decode_tree(fmt.encode_tree([{"n": odd}]))[0]["n"] == odd


def test_ids_and_keys() -> None:
    assert fmt.check_id("0123abcd" * 4, "snapshot")
    for bad in ["", "../x", "ABCDEF0123", "a" * 65]:
        with pytest.raises(StorageError):
            fmt.check_id(bad, "snapshot")
    pid = fmt.new_pack_id()
    assert fmt.pack_key("t/", pid) == f"t/packs/{pid[:2]}/{pid}"
    assert fmt.pack_id_of_key(fmt.pack_key("", pid)) == pid
