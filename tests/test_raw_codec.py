"""Raw documents in ``versions.raw``: Zstandard now, zlib in databases written before."""

from __future__ import annotations

import zlib

from docmaker import fixture_path

from trialwatch.storage.raw_codec import compress_raw, decompress_raw, new_compressor


def test_compressed_raw_reads_back_byte_exact() -> None:
    raw = fixture_path("NCT04267848").read_bytes()
    assert decompress_raw(compress_raw(raw)) == raw


def test_compressed_raw_is_smaller_than_the_document() -> None:
    raw = fixture_path("NCT04267848").read_bytes()
    assert len(compress_raw(raw)) < len(raw) / 3


def test_a_reused_compressor_gives_the_same_bytes() -> None:
    raw = fixture_path("NCT03722472").read_bytes()
    compressor = new_compressor()
    assert compress_raw(raw, compressor) == compress_raw(raw) == compress_raw(raw, compressor)


def test_zlib_raw_written_by_earlier_versions_still_reads_back() -> None:
    raw = fixture_path("NCT03722472").read_bytes()
    assert decompress_raw(zlib.compress(raw, 1)) == raw
