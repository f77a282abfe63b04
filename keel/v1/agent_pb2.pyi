from keel.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("host", "secret")
    HOST_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    host: str
    secret: str
    def __init__(self, host: _Optional[str] = ..., secret: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("credential",)
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    credential: str
    def __init__(self, credential: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("host", "labels", "capacity", "agent_version", "revision")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOST_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    host: str
    labels: _containers.ScalarMap[str, str]
    capacity: _types_pb2.Resources
    agent_version: str
    revision: int
    def __init__(self, host: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., capacity: _Optional[_Union[_types_pb2.Resources, _Mapping]] = ..., agent_version: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class StatusReport(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.InstanceStatus]
    def __init__(self, instances: _Optional[_Iterable[_Union[_types_pb2.InstanceStatus, _Mapping]]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("revision", "sequence", "ack_deferred")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACK_DEFERRED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    sequence: int
    ack_deferred: bool
    def __init__(self, revision: _Optional[int] = ..., sequence: _Optional[int] = ..., ack_deferred: _Optional[bool] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("sequence",)
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    def __init__(self, sequence: _Optional[int] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "report", "heartbeat", "log_chunk")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LOG_CHUNK_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    report: StatusReport
    heartbeat: Heartbeat
    log_chunk: _types_pb2.LogChunk
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., report: _Optional[_Union[StatusReport, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., log_chunk: _Optional[_Union[_types_pb2.LogChunk, _Mapping]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("instance_id", "workload", "generation", "desired", "spec", "revision", "trace_context")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    workload: str
    generation: int
    desired: _types_pb2.DesiredState
    spec: _types_pb2.WorkloadSpec
    revision: int
    trace_context: str
    def __init__(self, instance_id: _Optional[str] = ..., workload: _Optional[str] = ..., generation: _Optional[int] = ..., desired: _Optional[_Union[_types_pb2.DesiredState, str]] = ..., spec: _Optional[_Union[_types_pb2.WorkloadSpec, _Mapping]] = ..., revision: _Optional[int] = ..., trace_context: _Optional[str] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("full", "revision", "assignments")
    FULL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    full: bool
    revision: int
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, full: _Optional[bool] = ..., revision: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class LogRequest(_message.Message):
    __slots__ = ("request_id", "instance_id", "tail_lines", "follow", "cancel")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: str
    tail_lines: int
    follow: bool
    cancel: bool
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., tail_lines: _Optional[int] = ..., follow: _Optional[bool] = ..., cancel: _Optional[bool] = ...) -> None: ...

class ControlMessage(_message.Message):
    __slots__ = ("assignments", "log_request", "heartbeat_ack")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    LOG_REQUEST_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    assignments: Assignments
    log_request: LogRequest
    heartbeat_ack: HeartbeatAck
    def __init__(self, assignments: _Optional[_Union[Assignments, _Mapping]] = ..., log_request: _Optional[_Union[LogRequest, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ...) -> None: ...
