"""GGUF container: a strict reader and a small writer.

The reader treats every file as hostile. Each count, length and offset is checked against
the bytes actually present before anything is allocated, so a file that claims 2^40
tensors or a 1 TB string fails at once with one line, and the memory used is bounded by a
small multiple of the file size. Tensor data is not read here: the reader returns
zero-copy views into a read-only memory map.

We parse the container ourselves (rather than with gguf.GGUFReader) because bitnet.cpp's
I2_S (type 36) is unknown to the gguf package, and because its reader does not bound
allocations for hostile headers. The `gguf` package still supplies the type constants
and block sizes of the standard quantization types.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from .errors import BitnetError

MAGIC = b"GGUF"

# GGUF metadata value types
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
_SCALAR = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
           T_F32: "<f", T_BOOL: "<B", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}
_NP_SCALAR = {T_U8: "<u1", T_I8: "<i1", T_U16: "<u2", T_I16: "<i2", T_U32: "<u4", T_I32: "<i4",
              T_F32: "<f4", T_BOOL: "<u1", T_U64: "<u8", T_I64: "<i8", T_F64: "<f8"}

# Tensor types outside the gguf package's enum (bitnet.cpp fork ids).
I2_S, TL1, TL2 = 36, 38, 39
FORK_TYPE_NAMES = {I2_S: "I2_S", TL1: "TL1", TL2: "TL2"}
# Current ggml ids the gguf package may not know yet.
MXFP4, Q1_0, Q2_0 = 39, 41, 42
# Q2_0 as PrismML's llama.cpp fork wrote it under the same id: 128-weight groups. Not a
# file type id: a reading of id 42 chosen from the tensor's size (TensorInfo.reading).
Q2_0_G128 = 0x10000 + 42

# Ids whose meaning depends on who wrote the file. Each reading: (name, bytes for n
# elements and row length ne0, or None when not representable). The reader picks the
# reading whose size fits the bytes the tensor has in the file (up to the next tensor or
# the end of the file), largest first, and records which one it chose.
def _blocks(block, size):
    return lambda n, ne0: n // block * size if ne0 % block == 0 else None


_READINGS = {
    # bitnet.cpp's I2_S (x86 layout, f32 scale trailer) vs ggml's removed IQ4_NL_4_4
    I2_S: [("I2_S", lambda n, ne0: n // 4 + 32 if n % 128 == 0 else None),
           ("IQ4_NL_4_4", _blocks(32, 18))],
    # ggml's removed IQ4_NL_8_8 vs bitnet.cpp's TL1 (size tied to its generated kernels)
    TL1: [("IQ4_NL_8_8", _blocks(32, 18))],
    # current ggml's MXFP4 vs bitnet.cpp's TL2
    MXFP4: [("MXFP4", _blocks(32, 17))],
    Q2_0: [("Q2_0", _blocks(64, 18)), ("Q2_0_g128", _blocks(128, 34))],
}
_READING_IDS = {"Q2_0_g128": Q2_0_G128}

MAX_DIMS = 4
MAX_ELEMENTS = 1 << 40
MAX_STRING = 64 << 20       # a single metadata string (chat templates are a few KB)
MAX_ALIGNMENT = 1 << 16


def type_name(t: int) -> str:
    if t == Q2_0_G128:
        return "Q2_0_g128"
    if t == Q1_0:
        return "Q1_0"
    if t == Q2_0:
        return "Q2_0"
    if t in FORK_TYPE_NAMES:
        return FORK_TYPE_NAMES[t]
    try:
        return GGMLQuantizationType(t).name
    except ValueError:
        return f"type#{t}"


def tensor_nbytes(ggml_type: int, ne: tuple) -> int:
    """Bytes a tensor of this type and shape occupies; raises ValueError when not representable."""
    n = 1
    for d in ne:
        n *= d
    if ggml_type == I2_S:
        if n % 128:
            raise ValueError(f"I2_S needs a multiple of 128 elements, got {n}")
        return n // 4 + 32
    if ggml_type in (Q1_0, Q2_0, Q2_0_G128):
        block, size = {Q1_0: (128, 18), Q2_0: (64, 18), Q2_0_G128: (128, 34)}[ggml_type]
        if ne[0] % block:
            raise ValueError(f"row length {ne[0]} is not a multiple of the {type_name(ggml_type)} block of {block}")
        return n // block * size
    if ggml_type in (TL1, TL2):
        raise ValueError(f"{FORK_TYPE_NAMES[ggml_type]} is a bitnet.cpp layout tied to its generated kernels; "
                         "convert the model to I2_S, TQ2_0 or TQ1_0 instead")
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown tensor type id {ggml_type}") from None
    if ne[0] % block:
        raise ValueError(f"row length {ne[0]} is not a multiple of the {type_name(ggml_type)} block of {block}")
    return n // block * size


@dataclass
class TensorInfo:
    name: str
    ggml_type: int
    ne: tuple                 # ggml order: ne[0] is the fastest-varying (row length)
    offset: int               # absolute offset in the file
    nbytes: int
    reading: str = ""         # for ids whose meaning depends on the writer: the layout chosen
    reading_reason: str = ""  # why (printed by inspect)
    reading_scale: float = None  # I2_S reading: the f32 scale trailer found

    @property
    def type_name(self) -> str:
        return self.reading or type_name(self.ggml_type)

    @property
    def shape(self) -> tuple:
        """numpy order ([out, in] for a matrix)."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.ne:
            n *= d
        return n


class GGUFFile:
    """A parsed, validated GGUF file. `kv` maps keys to Python values (arrays of numbers as
    numpy arrays, arrays of strings as lists); `tensors` maps names to TensorInfo."""

    def __init__(self, path: str):
        self.path = path
        name = os.path.basename(path)
        try:
            fd = open(path, "rb")
        except OSError as e:
            raise BitnetError(f"{path}: cannot open ({e.strerror}); check the path") from None
        with fd:
            size = os.fstat(fd.fileno()).st_size
            if size < 24:
                raise BitnetError(f"{name}: not a GGUF file (only {size} bytes; a GGUF header needs 24)")
            self._mm = mmap.mmap(fd.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        self.buf = memoryview(self._mm)
        self.name = name
        self._parse()

    # -- low-level readers, every one bounds-checked ---------------------------------
    def _fail(self, what: str):
        raise BitnetError(f"{self.name}: {what}; the file is corrupt or not a GGUF model")

    def _need(self, n: int, what: str):
        if n < 0 or self.pos + n > self.size:
            self._fail(f"truncated while reading {what} at byte {self.pos} (needs {n} more bytes, file has {self.size})")

    def _scalar(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self._need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def _string(self, what: str) -> str:
        n = self._scalar("<Q", what + " length")
        if n > MAX_STRING:
            self._fail(f"{what} claims a string of {n} bytes (limit {MAX_STRING})")
        self._need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="surrogateescape")

    def _value(self, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALAR:
            v = self._scalar(_SCALAR[vtype], what)
            if vtype == T_BOOL:
                if v > 1:
                    self._fail(f"{what}: bool value {v}")
                return bool(v)
            return v
        if vtype == T_STR:
            return self._string(what)
        if vtype == T_ARR:
            if depth > 0:
                self._fail(f"{what}: nested arrays are not supported")
            etype = self._scalar("<I", what + " element type")
            count = self._scalar("<Q", what + " element count")
            if etype in _NP_SCALAR:
                esize = np.dtype(_NP_SCALAR[etype]).itemsize
                if count > (self.size - self.pos) // esize:
                    self._fail(f"{what} claims {count} elements, more than the file holds")
                arr = np.frombuffer(self.buf, dtype=_NP_SCALAR[etype], count=count, offset=self.pos).copy()
                self.pos += count * esize
                return arr
            if etype == T_STR:
                if count > (self.size - self.pos) // 8:
                    self._fail(f"{what} claims {count} strings, more than the file holds")
                return [self._string(f"{what}[{i}]") for i in range(count)]
            self._fail(f"{what}: unknown array element type {etype}")
        self._fail(f"{what}: unknown metadata value type {vtype}")

    # -- the file ---------------------------------------------------------------------
    def _parse(self):
        self.pos = 0
        if bytes(self.buf[:4]) != MAGIC:
            self._fail(f"bad magic {bytes(self.buf[:4])!r} (expected b'GGUF')")
        self.pos = 4
        self.version = self._scalar("<I", "version")
        if self.version not in (2, 3):
            raise BitnetError(f"{self.name}: GGUF version {self.version} is not supported (only 2 and 3); "
                              "re-convert the model with a current converter")
        n_tensors = self._scalar("<Q", "tensor count")
        n_kv = self._scalar("<Q", "metadata count")
        # Every metadata entry needs >= 13 bytes and every tensor info >= 24: refuse counts
        # the file cannot hold before allocating anything for them.
        if n_kv > (self.size - self.pos) // 13:
            self._fail(f"header claims {n_kv} metadata entries, more than the file can hold")
        if n_tensors > (self.size - self.pos) // 24:
            self._fail(f"header claims {n_tensors} tensors, more than the file can hold")

        self.kv = {}
        for i in range(n_kv):
            key = self._string(f"metadata key #{i}")
            vtype = self._scalar("<I", f"type of {key!r}")
            if key in self.kv:
                self._fail(f"metadata key {key!r} appears twice")
            self.kv[key] = self._value(vtype, f"metadata {key!r}")

        align = self.kv.get("general.alignment", 32)
        if not isinstance(align, int) or isinstance(align, bool) or align <= 0 \
                or align > MAX_ALIGNMENT or align & (align - 1):
            self._fail(f"general.alignment {align!r} is not a power of two up to {MAX_ALIGNMENT}")
        self.alignment = align

        infos = []
        seen = set()
        for i in range(n_tensors):
            name = self._string(f"tensor #{i} name")
            n_dims = self._scalar("<I", f"tensor {name!r} dimension count")
            if not 1 <= n_dims <= MAX_DIMS:
                self._fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
            ne = tuple(self._scalar("<Q", f"tensor {name!r} shape") for _ in range(n_dims))
            ggml_type = self._scalar("<I", f"tensor {name!r} type")
            rel = self._scalar("<Q", f"tensor {name!r} offset")
            n = 1
            for d in ne:
                if d == 0 or d > MAX_ELEMENTS:
                    self._fail(f"tensor {name!r} has an impossible shape {list(ne)}")
                n *= d
                if n > MAX_ELEMENTS:
                    self._fail(f"tensor {name!r} has an impossible shape {list(ne)}")
            if ggml_type in _READINGS:
                nb = -1               # decided below, from the bytes the tensor has
            else:
                try:
                    nb = tensor_nbytes(ggml_type, ne)
                except ValueError as e:
                    raise BitnetError(f"{self.name}: tensor {name!r}: {e}") from None
            if name in seen:
                self._fail(f"tensor {name!r} appears twice")
            seen.add(name)
            infos.append(TensorInfo(name, ggml_type, ne, rel, nb))

        data_start = (self.pos + align - 1) // align * align
        self.data_start = data_start
        self.tensors = {}
        for t in infos:
            if t.offset % align:
                self._fail(f"tensor {t.name!r} offset {t.offset} is not aligned to {align}")
            t.offset += data_start
        if any(t.nbytes < 0 for t in infos):
            self._choose_readings(infos)
        for t in infos:
            if t.offset + t.nbytes > self.size:
                self._fail(f"tensor {t.name!r} ({t.type_name} {list(t.ne)}, {t.nbytes} bytes at {t.offset}) "
                           f"runs past the end of the file ({self.size} bytes): truncated download?")
            self.tensors[t.name] = t

    def _choose_readings(self, infos):
        """Pick the layout of each tensor whose type id means different things to different
        writers, from the bytes it has in the file (up to the next tensor's data or the end)."""
        starts = sorted({t.offset for t in infos})
        nxt = {a: b for a, b in zip(starts, starts[1:] + [self.size])}
        arch = self.kv.get("general.architecture")
        for t in infos:
            if t.nbytes >= 0:
                continue
            span = nxt[t.offset] - t.offset
            n = t.n_elements
            cands = []
            for rname, size in _READINGS[t.ggml_type]:
                nb = size(n, t.ne[0])
                if nb is not None:
                    cands.append((nb, rname))
            fits = sorted((c for c in cands if c[0] <= span), reverse=True)
            tid = t.ggml_type
            if not fits:
                if tid == MXFP4:
                    raise BitnetError(
                        f"{self.name}: tensor {t.name!r} has type id 39 with {span} bytes, which is not ggml's "
                        f"MXFP4 ({cands[0][0] if cands else '?'} bytes): bitnet.cpp's TL2, a layout tied to its "
                        "generated kernels; convert the model to I2_S, TQ2_0 or TQ1_0 instead")
                if tid == TL1:
                    raise BitnetError(
                        f"{self.name}: tensor {t.name!r} has type id 38: bitnet.cpp's TL1, a layout tied to its "
                        "generated kernels; convert the model to I2_S, TQ2_0 or TQ1_0 instead")
                need = ", ".join(f"{r} {b} bytes" for b, r in cands) or "no layout fits its shape"
                self._fail(f"tensor {t.name!r} ({type_name(tid)} {list(t.ne)}) has {span} bytes in the file, "
                           f"less than any reading of type id {tid} needs ({need}): truncated download?")
            nb, rname = fits[0]
            t.nbytes = nb
            t.reading = rname
            if tid == I2_S:
                if rname == "I2_S":
                    trailer = n // 4
                    sc = (struct.unpack_from("<f", self.buf, t.offset + trailer)[0]
                          if t.offset + trailer + 4 <= self.size else float("nan"))
                    t.reading_scale = sc
                    t.reading_reason = (f"type id 36 read as bitnet.cpp's I2_S (x86 layout, 128-weight blocks, "
                                        f"n/4 + 32 bytes with an f32 scale trailer), architecture {arch!r}")
                else:
                    t.reading_reason = ("type id 36 read as ggml's IQ4_NL_4_4 (more bytes than I2_S's n/4 + 32), "
                                        "a type current ggml removed")
            elif tid == TL1:
                t.reading_reason = "type id 38 read as ggml's removed IQ4_NL_8_8"
            elif tid == MXFP4:
                t.reading_reason = "type id 39 read as ggml's MXFP4 (its size fits), not bitnet.cpp's TL2"
            elif tid == Q2_0:
                t.ggml_type = _READING_IDS.get(rname, tid)
                t.reading_reason = ("type id 42 read as ggml's Q2_0 (64-weight groups, 18 bytes each)"
                                    if rname == "Q2_0" else
                                    "type id 42 read as PrismML's Q2_0 (128-weight groups, 34 bytes each): "
                                    "too few bytes for ggml's 64-weight groups")

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view (no copy)."""
        t = self.tensors[name]
        return np.frombuffer(self.buf, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def close(self):
        self.buf.release()
        self._mm.close()


# ----------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------
def _kv_bytes(key: str, value) -> bytes:
    """Encode one metadata entry. Python types pick the GGUF type; use (type, value) to force one."""
    out = [_pack_str(key)]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int):
        vtype, value = value
    else:
        vtype = _infer_type(value)
    out.append(struct.pack("<I", vtype))
    out.append(_value_bytes(vtype, value))
    return b"".join(out)


def _infer_type(v) -> int:
    if isinstance(v, bool):
        return T_BOOL
    if isinstance(v, int):
        return T_U32 if 0 <= v < 2**32 else T_I64
    if isinstance(v, float):
        return T_F32
    if isinstance(v, str):
        return T_STR
    if isinstance(v, (list, np.ndarray)):
        return T_ARR
    raise TypeError(f"cannot store {type(v)} in GGUF metadata")


def _pack_str(s) -> bytes:
    b = s.encode("utf-8", errors="surrogateescape") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def _value_bytes(vtype: int, v) -> bytes:
    if vtype in _SCALAR:
        return struct.pack(_SCALAR[vtype], int(v) if vtype != T_F32 and vtype != T_F64 else float(v))
    if vtype == T_STR:
        return _pack_str(v)
    if vtype == T_ARR:
        if isinstance(v, np.ndarray):
            et = {np.dtype("float32"): T_F32, np.dtype("int32"): T_I32, np.dtype("uint8"): T_U8,
                  np.dtype("int8"): T_I8, np.dtype("uint32"): T_U32, np.dtype("int64"): T_I64,
                  np.dtype("float64"): T_F64}[v.dtype]
            return struct.pack("<IQ", et, v.size) + v.astype(_NP_SCALAR[et]).tobytes()
        if len(v) == 0 or isinstance(v[0], str):
            return struct.pack("<IQ", T_STR, len(v)) + b"".join(_pack_str(s) for s in v)
        if isinstance(v[0], float):
            return _value_bytes(T_ARR, np.asarray(v, dtype=np.float32))
        return _value_bytes(T_ARR, np.asarray(v, dtype=np.int32))
    raise TypeError(vtype)


@dataclass
class TensorToWrite:
    name: str
    ggml_type: int
    ne: tuple           # ggml order
    data: object        # bytes-like, or a callable returning bytes-like (written lazily)


def write_gguf(path: str, kv: dict, tensors: list, alignment: int = 32, version: int = 3):
    """Write a GGUF file. `kv` is an ordered dict of metadata; `tensors` a list of
    TensorToWrite. Tensor data may be produced lazily so big models stream to disk."""
    infos = []
    offset = 0
    for t in tensors:
        nb = tensor_nbytes(t.ggml_type, t.ne)
        infos.append((t, offset, nb))
        offset = (offset + nb + alignment - 1) // alignment * alignment
    kv = dict(kv)
    if alignment != 32:
        kv["general.alignment"] = (T_U32, alignment)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<IQQ", version, len(tensors), len(kv)))
        for k, v in kv.items():
            f.write(_kv_bytes(k, v))
        for t, off, nb in infos:
            f.write(_pack_str(t.name) + struct.pack("<I", len(t.ne)))
            f.write(struct.pack(f"<{len(t.ne)}Q", *t.ne))
            f.write(struct.pack("<IQ", Q2_0 if t.ggml_type == Q2_0_G128 else t.ggml_type, off))
        pos = f.tell()
        start = (pos + alignment - 1) // alignment * alignment
        f.write(b"\0" * (start - pos))
        for t, off, nb in infos:
            here = f.tell() - start
            f.write(b"\0" * (off - here))
            data = t.data() if callable(t.data) else t.data
            mv = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else memoryview(data)
            if mv.nbytes != nb:
                raise ValueError(f"tensor {t.name}: {mv.nbytes} bytes given, {nb} expected")
            f.write(mv)
    os.replace(tmp, path)
