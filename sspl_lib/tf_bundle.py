"""A reader of TensorFlow's tensor-bundle checkpoints (a SavedModel's `variables/`) without TensorFlow: the
`.index` file is a LevelDB table of name -> `BundleEntryProto` (dtype, shape, shard, offset, size), the tensors
are raw little-endian bytes in the `.data-*` shards."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes + the 8-byte magic
BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes)
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}  # TF's DataType enum
DT_STRING = 7


class BundleError(ValueError):
    """A file that is not a readable tensor bundle; the message names the file and the problem."""


@dataclass(frozen=True)
class BundleEntry:
    dtype: int  # TF DataType enum value
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int


# ----------------------------------------------------------------------------- crc32c (Castagnoli)
def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """LevelDB's stored form of a crc: rotated right by 15 bits plus a constant."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- wire formats
def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The unsigned LEB128 varint at `pos` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleError("a varint runs past the end of its buffer")
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message (length-delimited values as bytes, the rest as int)."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = bytes(buf[pos:pos + n]), pos + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + n], "little"), pos + n
        else:
            raise BundleError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def parse_entry(buf: bytes) -> BundleEntry:
    """A serialized `BundleEntryProto` (dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6, slices=7)."""
    f = dict(dtype=0, shape=(), shard=0, offset=0, size=0, crc32c=0)
    for number, value in proto_fields(buf):
        if number == 2:  # TensorShapeProto: repeated dim (2) {size (1)}
            f["shape"] = tuple(next((v for n, v in proto_fields(d) if n == 1), 0)
                               for n, d in proto_fields(value) if n == 2)
        elif number == 7:
            raise BundleError("sliced (partitioned) tensors are not supported")
        elif number in (1, 3, 4, 5, 6):
            f[("dtype", "", "shard", "offset", "size", "crc32c")[number - 1]] = value
    return BundleEntry(**f)


def block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of a table block (prefix-compressed entries, then restart offsets and their count)."""
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 * (n_restarts + 1)
    out, key, pos = [], b"", 0
    while pos < end:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        n_value, pos = varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        out.append((key, block[pos:pos + n_value]))
        pos += n_value
    return out


# ----------------------------------------------------------------------------- the bundle
class TensorBundle:
    """The tensor bundle at `prefix` (`…/variables/variables`: reads `prefix.index` and its data shards)."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        if not self.index_path.is_file():
            raise FileNotFoundError(f"tensor bundle index not found: {self.index_path}")
        self._buf = self.index_path.read_bytes()
        try:
            pairs = self._table_pairs()
        except (BundleError, struct.error, IndexError) as e:
            raise BundleError(f"{self.index_path}: not a readable tensor-bundle index ({e})") from None
        self.num_shards = self._check_header(dict(pairs).get(b""))
        self.entries = {k.decode(): parse_entry(v) for k, v in pairs if k}
        self._shards: dict[int, np.memmap] = {}

    def _block(self, handle: bytes, pos: int = 0) -> bytes:
        offset, pos = varint(handle, pos)
        size, _ = varint(handle, pos)
        if offset + size + BLOCK_TRAILER > len(self._buf) - FOOTER_SIZE:
            raise BundleError(f"a block handle ({offset}, {size}) points past the end of the file")
        block, trailer = self._buf[offset:offset + size], self._buf[offset + size:offset + size + BLOCK_TRAILER]
        if trailer[0] != 0:
            raise BundleError(f"block at {offset} is compressed (type {trailer[0]}); expected none")
        if int.from_bytes(trailer[1:], "little") != masked_crc32c(block + trailer[:1]):
            raise BundleError(f"block at {offset} fails its crc32c check (the file is corrupt)")
        return block

    def _table_pairs(self) -> list[tuple[bytes, bytes]]:
        if len(self._buf) < FOOTER_SIZE:
            raise BundleError(f"{len(self._buf)} bytes, shorter than a table footer")
        footer = self._buf[-FOOTER_SIZE:]
        if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
            raise BundleError("no table magic number at the end")
        _, pos = varint(footer, 0)  # skip the metaindex block's offset
        _, pos = varint(footer, pos)  # and size
        index = self._block(footer, pos)
        return [pair for _, handle in block_entries(index) for pair in block_entries(self._block(handle))]

    def _check_header(self, header: bytes | None) -> int:
        if header is None:
            raise BundleError(f"{self.index_path}: no bundle header (the empty key)")
        fields = dict(proto_fields(header))  # num_shards=1, endianness=2 (0 = little), version=3
        if fields.get(2, 0) != 0:
            raise BundleError(f"{self.index_path}: a big-endian bundle; only little-endian is supported")
        return int(fields.get(1, 1))

    def data_path(self, shard: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str, *, verify: bool = False) -> np.ndarray:
        """The tensor `name` as a numpy array; `verify` checks its crc32c (pure Python: small tensors, tests)."""
        if name not in self.entries:
            raise KeyError(f"{self.index_path}: no tensor {name!r}")
        e = self.entries[name]
        if e.dtype not in DTYPES:
            raise BundleError(f"{self.index_path}: tensor {name!r} has TF dtype {e.dtype}"
                              f"{' (string)' if e.dtype == DT_STRING else ''}; only numeric tensors are read")
        dtype = np.dtype(DTYPES[e.dtype]).newbyteorder("<")
        if e.size != int(np.prod(e.shape, dtype=np.int64)) * dtype.itemsize:
            raise BundleError(f"{self.index_path}: tensor {name!r} has {e.size} bytes for shape {e.shape}")
        if e.shard not in self._shards:
            path = self.data_path(e.shard)
            if not path.is_file():
                raise FileNotFoundError(f"tensor bundle data shard not found: {path}")
            self._shards[e.shard] = np.memmap(path, dtype=np.uint8, mode="r")
        data = self._shards[e.shard]
        if e.offset + e.size > data.shape[0]:
            raise BundleError(f"{self.data_path(e.shard)}: tensor {name!r} runs past the end of the file")
        raw = data[e.offset:e.offset + e.size].tobytes()
        if verify and masked_crc32c(raw) != e.crc32c:
            raise BundleError(f"{self.data_path(e.shard)}: tensor {name!r} fails its crc32c check (corrupt file)")
        return np.frombuffer(raw, dtype=dtype).reshape(e.shape).copy()
