import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DesiredState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DESIRED_STATE_UNSPECIFIED: _ClassVar[DesiredState]
    DESIRED_RUNNING: _ClassVar[DesiredState]
    DESIRED_STOPPED: _ClassVar[DesiredState]
    DESIRED_REMOVED: _ClassVar[DesiredState]

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_PENDING: _ClassVar[Phase]
    PHASE_STARTING: _ClassVar[Phase]
    PHASE_RUNNING: _ClassVar[Phase]
    PHASE_STOPPING: _ClassVar[Phase]
    PHASE_STOPPED: _ClassVar[Phase]
    PHASE_FAILED: _ClassVar[Phase]
DESIRED_STATE_UNSPECIFIED: DesiredState
DESIRED_RUNNING: DesiredState
DESIRED_STOPPED: DesiredState
DESIRED_REMOVED: DesiredState
PHASE_UNSPECIFIED: Phase
PHASE_PENDING: Phase
PHASE_STARTING: Phase
PHASE_RUNNING: Phase
PHASE_STOPPING: Phase
PHASE_STOPPED: Phase
PHASE_FAILED: Phase

class Resources(_message.Message):
    __slots__ = ("cpu_millis", "memory_mib")
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    cpu_millis: int
    memory_mib: int
    def __init__(self, cpu_millis: _Optional[int] = ..., memory_mib: _Optional[int] = ...) -> None: ...

class HttpProbe(_message.Message):
    __slots__ = ("port", "path")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    port: str
    path: str
    def __init__(self, port: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ExecProbe(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, command: _Optional[_Iterable[str]] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("tcp", "http", "exec")
    TCP_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    tcp: str
    http: HttpProbe
    exec: ExecProbe
    def __init__(self, tcp: _Optional[str] = ..., http: _Optional[_Union[HttpProbe, _Mapping]] = ..., exec: _Optional[_Union[ExecProbe, _Mapping]] = ...) -> None: ...

class SecretValue(_message.Message):
    __slots__ = ("value", "file", "redacted")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    REDACTED_FIELD_NUMBER: _ClassVar[int]
    value: str
    file: str
    redacted: bool
    def __init__(self, value: _Optional[str] = ..., file: _Optional[str] = ..., redacted: _Optional[bool] = ...) -> None: ...

class WorkloadSpec(_message.Message):
    __slots__ = ("command", "env", "ports", "resources", "health", "stop_grace_ms", "min_ready_ms", "secret_env", "user", "stop_after_disconnect_ms")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SecretEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SecretValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SecretValue, _Mapping]] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    STOP_GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_READY_MS_FIELD_NUMBER: _ClassVar[int]
    SECRET_ENV_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    STOP_AFTER_DISCONNECT_MS_FIELD_NUMBER: _ClassVar[int]
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    ports: _containers.RepeatedScalarFieldContainer[str]
    resources: Resources
    health: HealthCheck
    stop_grace_ms: int
    min_ready_ms: int
    secret_env: _containers.MessageMap[str, SecretValue]
    user: str
    stop_after_disconnect_ms: int
    def __init__(self, command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., ports: _Optional[_Iterable[str]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., health: _Optional[_Union[HealthCheck, _Mapping]] = ..., stop_grace_ms: _Optional[int] = ..., min_ready_ms: _Optional[int] = ..., secret_env: _Optional[_Mapping[str, SecretValue]] = ..., user: _Optional[str] = ..., stop_after_disconnect_ms: _Optional[int] = ...) -> None: ...

class Stuck(_message.Message):
    __slots__ = ("reason", "since", "message", "runbook", "next_command")
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUNBOOK_FIELD_NUMBER: _ClassVar[int]
    NEXT_COMMAND_FIELD_NUMBER: _ClassVar[int]
    reason: str
    since: _timestamp_pb2.Timestamp
    message: str
    runbook: str
    next_command: str
    def __init__(self, reason: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., runbook: _Optional[str] = ..., next_command: _Optional[str] = ...) -> None: ...

class WorkloadStatus(_message.Message):
    __slots__ = ("desired", "instances", "running", "ready", "updated")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    desired: int
    instances: int
    running: int
    ready: int
    updated: int
    def __init__(self, desired: _Optional[int] = ..., instances: _Optional[int] = ..., running: _Optional[int] = ..., ready: _Optional[int] = ..., updated: _Optional[int] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("name", "kind", "replicas", "max_unavailable", "max_surge", "selector", "deadline_ms", "spec", "generation", "deleting", "created_at", "updated_at", "status", "stuck", "rollout", "paused", "paused_by", "paused_at")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MAX_SURGE_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DELETING_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_BY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    replicas: int
    max_unavailable: int
    max_surge: int
    selector: _containers.ScalarMap[str, str]
    deadline_ms: int
    spec: WorkloadSpec
    generation: int
    deleting: bool
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    status: WorkloadStatus
    stuck: Stuck
    rollout: RolloutPolicy
    paused: bool
    paused_by: str
    paused_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., replicas: _Optional[int] = ..., max_unavailable: _Optional[int] = ..., max_surge: _Optional[int] = ..., selector: _Optional[_Mapping[str, str]] = ..., deadline_ms: _Optional[int] = ..., spec: _Optional[_Union[WorkloadSpec, _Mapping]] = ..., generation: _Optional[int] = ..., deleting: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[WorkloadStatus, _Mapping]] = ..., stuck: _Optional[_Union[Stuck, _Mapping]] = ..., rollout: _Optional[_Union[RolloutPolicy, _Mapping]] = ..., paused: _Optional[bool] = ..., paused_by: _Optional[str] = ..., paused_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RolloutPolicy(_message.Message):
    __slots__ = ("progress_deadline_ms", "auto_rollback", "canary", "auto_promote")
    PROGRESS_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    AUTO_ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    AUTO_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    progress_deadline_ms: int
    auto_rollback: bool
    canary: int
    auto_promote: bool
    def __init__(self, progress_deadline_ms: _Optional[int] = ..., auto_rollback: _Optional[bool] = ..., canary: _Optional[int] = ..., auto_promote: _Optional[bool] = ...) -> None: ...

class InstanceStatus(_message.Message):
    __slots__ = ("instance_id", "phase", "pid", "restart_count", "last_exit", "reason", "message", "ports", "ready", "removed", "started_at", "observed_at", "stuck")
    class PortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTART_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    phase: Phase
    pid: int
    restart_count: int
    last_exit: str
    reason: str
    message: str
    ports: _containers.ScalarMap[str, int]
    ready: bool
    removed: bool
    started_at: _timestamp_pb2.Timestamp
    observed_at: _timestamp_pb2.Timestamp
    stuck: Stuck
    def __init__(self, instance_id: _Optional[str] = ..., phase: _Optional[_Union[Phase, str]] = ..., pid: _Optional[int] = ..., restart_count: _Optional[int] = ..., last_exit: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., ports: _Optional[_Mapping[str, int]] = ..., ready: _Optional[bool] = ..., removed: _Optional[bool] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stuck: _Optional[_Union[Stuck, _Mapping]] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("id", "workload", "generation", "host", "desired", "desired_changed_at", "status", "created_at", "converged", "stuck", "replaces")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    DESIRED_CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    REPLACES_FIELD_NUMBER: _ClassVar[int]
    id: str
    workload: str
    generation: int
    host: str
    desired: DesiredState
    desired_changed_at: _timestamp_pb2.Timestamp
    status: InstanceStatus
    created_at: _timestamp_pb2.Timestamp
    converged: bool
    stuck: Stuck
    replaces: str
    def __init__(self, id: _Optional[str] = ..., workload: _Optional[str] = ..., generation: _Optional[int] = ..., host: _Optional[str] = ..., desired: _Optional[_Union[DesiredState, str]] = ..., desired_changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[InstanceStatus, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., converged: _Optional[bool] = ..., stuck: _Optional[_Union[Stuck, _Mapping]] = ..., replaces: _Optional[str] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("name", "labels", "capacity", "allocated", "schedulable", "cordon_reason", "state", "last_heartbeat", "connected", "agent_version", "instances", "revision", "cordon_actor", "cordoned_at", "drained", "gone", "state_since")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULABLE_FIELD_NUMBER: _ClassVar[int]
    CORDON_REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CORDON_ACTOR_FIELD_NUMBER: _ClassVar[int]
    CORDONED_AT_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    capacity: Resources
    allocated: Resources
    schedulable: bool
    cordon_reason: str
    state: str
    last_heartbeat: _timestamp_pb2.Timestamp
    connected: bool
    agent_version: str
    instances: int
    revision: int
    cordon_actor: str
    cordoned_at: _timestamp_pb2.Timestamp
    drained: bool
    gone: bool
    state_since: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., allocated: _Optional[_Union[Resources, _Mapping]] = ..., schedulable: _Optional[bool] = ..., cordon_reason: _Optional[str] = ..., state: _Optional[str] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., connected: _Optional[bool] = ..., agent_version: _Optional[str] = ..., instances: _Optional[int] = ..., revision: _Optional[int] = ..., cordon_actor: _Optional[str] = ..., cordoned_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., drained: _Optional[bool] = ..., gone: _Optional[bool] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("request_id", "stream", "data", "eof", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream: str
    data: bytes
    eof: bool
    error: str
    def __init__(self, request_id: _Optional[str] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...
