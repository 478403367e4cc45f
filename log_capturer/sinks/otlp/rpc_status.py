"""``google.rpc.Status``, the body of an OTLP/HTTP error answer, as a protobuf class.

Built at import from a descriptor written out here (as sinks/loki/logproto.py does), so
the project needs no googleapis package for three fields. The schema, as in
google/rpc/status.proto (field numbers are the wire format)::

    message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(
        name="log_capturer/rpc_status.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )
    msg = proto.message_type.add(name="Status")
    msg.field.add(name="code", number=1, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    msg.field.add(name="message", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    msg.field.add(
        name="details",
        number=3,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


Status: Any = _build()
