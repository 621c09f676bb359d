"""The decode contract inside each shipped `.tflite`: a flatbuffer metadata entry (`Model.metadata`, the mechanism
TFLite itself uses for `min_runtime_version`) named `pipeline_contract`, holding zlib-compressed UTF-8 JSON.

Written with TensorFlow's own flatbuffer bindings of the TFLite schema (tflite-support, the usual writer, cannot
install beside our protobuf). Vela keeps a model's metadata when it compiles it, so the NPU graphs carry it too.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

from .errors import ArtifactError

CONTRACT_METADATA = "pipeline_contract"


def tflite_schema():  # type: ignore[no-untyped-def]
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def load_model(data: bytes) -> Any:
    """The object form (`ModelT`) of a .tflite, to edit and `pack_model` again."""
    schema = tflite_schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))


def pack_model(model: Any, size_hint: int = 1 << 20) -> bytes:
    """A `ModelT` written back as .tflite bytes."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def fully_connected(model: Any, subgraph: Any) -> list[tuple[int, int, int]]:
    """(input, weights, bias or -1) tensor indices of every FULLY_CONNECTED operator of `subgraph`, in order."""
    fc = tflite_schema().BuiltinOperator.FULLY_CONNECTED
    out = []
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == fc:
            bias = int(op.inputs[2]) if len(op.inputs) > 2 else -1
            out.append((int(op.inputs[0]), int(op.inputs[1]), bias))
    return out


def stamp(model: bytes, payload: dict[str, Any], name: str = CONTRACT_METADATA) -> bytes:
    """`model` with metadata entry `name` = zlib(JSON(payload)), replacing an entry of that name."""
    schema = tflite_schema()
    m = load_model(model)
    data = zlib.compress(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode(), 9)
    buf = schema.BufferT()
    buf.data = np.frombuffer(data, np.uint8)
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(m.buffers) - 1
    m.metadata = [e for e in (m.metadata or []) if e.name.decode() != name] + [entry]
    return pack_model(m, len(model) + len(data) + 4096)


def read_contract(model: bytes, where: str, name: str = CONTRACT_METADATA) -> dict[str, Any] | None:
    """The JSON of metadata entry `name` (None if the model has none); ArtifactError naming `where` if it is not
    zlib-compressed JSON."""
    schema = tflite_schema()
    try:
        m = schema.Model.GetRootAsModel(model, 0)
        for i in range(m.MetadataLength()):
            entry = m.Metadata(i)
            if entry.Name().decode() == name:
                data = bytes(m.Buffers(entry.Buffer()).DataAsNumpy())
                return json.loads(zlib.decompress(data))
    except (zlib.error, ValueError, IndexError, AttributeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{where}: its `{name}` metadata cannot be read ({exc}).") from None
    return None
