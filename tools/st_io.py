#!/usr/bin/python3
"""Minimal safetensors writer/reader (no `safetensors` package needed).

File = u64 little-endian header length N, N bytes of JSON header
{"__metadata__": {"format": "pt"}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}
(offsets relative to the end of the header; header padded with spaces to a multiple of 8),
then the raw little-endian tensor bytes, in the order of the header's tensors.
Supported dtypes: BF16, F32, I32, I64.
"""
import json
import struct

import numpy as np
import torch

_NP = {"F32": np.float32, "I32": np.int32, "I64": np.int64}


def _tensor_bytes(t, dtype):
    t = t.detach().cpu().contiguous()
    if dtype == "BF16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "I32":
        return t.to(torch.int32).numpy().astype("<i4").tobytes()
    if dtype == "I64":
        return t.to(torch.int64).numpy().astype("<i8").tobytes()
    raise ValueError(dtype)


def save(path, tensors, dtypes, metadata=None):
    """tensors: ordered dict name -> torch.Tensor; dtypes: name -> 'BF16'|'F32'|'I32'|'I64' (or one str)."""
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs = []
    off = 0
    for name, t in tensors.items():
        dt = dtypes if isinstance(dtypes, str) else dtypes[name]
        b = _tensor_bytes(t, dt)
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    """Returns (dict name -> torch.Tensor, metadata). BF16 is returned as torch.bfloat16."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = data[base + b: base + e]
        shape = info["shape"]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            t = torch.from_numpy(u.view(np.float32).reshape(shape).copy()).to(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=_NP[info["dtype"]]).reshape(shape).copy())
        out[name] = t
    return out, meta
