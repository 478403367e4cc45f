"""Loki's push messages (``logproto.PushRequest`` of pkg/push/push.proto), as protobuf classes.

The classes are built at import from a descriptor written out here, so the project needs
neither protoc nor a generated ``_pb2`` module; ``protobuf`` (upb, C) serializes them.
The schema, as in Loki v3.4 (field numbers are the wire format)::

    message PushRequest      { repeated StreamAdapter streams = 1; }
    message StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2;
                               uint64 hash = 3; }
    message LabelPairAdapter { string name = 1; string value = 2; }
    message EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
                               repeated LabelPairAdapter structuredMetadata = 3; }

``labels`` is the label set in Prometheus' spelling, ``{a="1", b="2"}``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> Any:
    """The PushRequest class (its nested messages are reached through its fields)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="log_capturer/loki_push.proto",
        package="logproto",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )

    def message(name: str, *fields: tuple[str, int, int, str | None]) -> None:
        msg = proto.message_type.add(name=name)
        for number, (field, kind, label, type_name) in enumerate(fields, 1):
            spec = msg.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                spec.type_name = type_name

    one, many = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    message("PushRequest", ("streams", _F.TYPE_MESSAGE, many, ".logproto.StreamAdapter"))
    message(
        "StreamAdapter",
        ("labels", _F.TYPE_STRING, one, None),
        ("entries", _F.TYPE_MESSAGE, many, ".logproto.EntryAdapter"),
        ("hash", _F.TYPE_UINT64, one, None),
    )
    message(
        "LabelPairAdapter",
        ("name", _F.TYPE_STRING, one, None),
        ("value", _F.TYPE_STRING, one, None),
    )
    message(
        "EntryAdapter",
        ("timestamp", _F.TYPE_MESSAGE, one, ".google.protobuf.Timestamp"),
        ("line", _F.TYPE_STRING, one, None),
        ("structuredMetadata", _F.TYPE_MESSAGE, many, ".logproto.LabelPairAdapter"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


PushRequest: Any = _build()
