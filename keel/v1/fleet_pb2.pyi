import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from keel.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApplyWorkloadRequest(_message.Message):
    __slots__ = ("manifest_json", "reason", "override_freeze")
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FREEZE_FIELD_NUMBER: _ClassVar[int]
    manifest_json: str
    reason: str
    override_freeze: bool
    def __init__(self, manifest_json: _Optional[str] = ..., reason: _Optional[str] = ..., override_freeze: _Optional[bool] = ...) -> None: ...

class ApplyWorkloadResponse(_message.Message):
    __slots__ = ("workload", "result")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    workload: _types_pb2.Workload
    result: str
    def __init__(self, workload: _Optional[_Union[_types_pb2.Workload, _Mapping]] = ..., result: _Optional[str] = ...) -> None: ...

class GetWorkloadRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListWorkloadsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkloadsResponse(_message.Message):
    __slots__ = ("workloads", "next_page_token")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[_types_pb2.Workload]
    next_page_token: str
    def __init__(self, workloads: _Optional[_Iterable[_Union[_types_pb2.Workload, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteWorkloadRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteWorkloadResponse(_message.Message):
    __slots__ = ("workload",)
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    workload: _types_pb2.Workload
    def __init__(self, workload: _Optional[_Union[_types_pb2.Workload, _Mapping]] = ...) -> None: ...

class GetHostRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts", "next_page_token")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[_types_pb2.Host]
    next_page_token: str
    def __init__(self, hosts: _Optional[_Iterable[_Union[_types_pb2.Host, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteHostRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteHostResponse(_message.Message):
    __slots__ = ("name", "removed_instances")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REMOVED_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    removed_instances: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., removed_instances: _Optional[_Iterable[str]] = ...) -> None: ...

class GetInstanceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("workload", "host", "page_size", "page_token")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workload: str
    host: str
    page_size: int
    page_token: str
    def __init__(self, workload: _Optional[str] = ..., host: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_page_token")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.Instance]
    next_page_token: str
    def __init__(self, instances: _Optional[_Iterable[_Union[_types_pb2.Instance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StuckObject(_message.Message):
    __slots__ = ("object", "stuck")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    object: str
    stuck: _types_pb2.Stuck
    def __init__(self, object: _Optional[str] = ..., stuck: _Optional[_Union[_types_pb2.Stuck, _Mapping]] = ...) -> None: ...

class ListStuckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStuckResponse(_message.Message):
    __slots__ = ("objects",)
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[StuckObject]
    def __init__(self, objects: _Optional[_Iterable[_Union[StuckObject, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "at", "object", "kind", "actor", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: _timestamp_pb2.Timestamp
    object: str
    kind: str
    actor: str
    message: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., object: _Optional[str] = ..., kind: _Optional[str] = ..., actor: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("object", "limit")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    object: str
    limit: int
    def __init__(self, object: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class GetLogsRequest(_message.Message):
    __slots__ = ("instance_id", "tail_lines", "follow")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    tail_lines: int
    follow: bool
    def __init__(self, instance_id: _Optional[str] = ..., tail_lines: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class CordonRequest(_message.Message):
    __slots__ = ("hosts", "selector", "reason")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    selector: _containers.ScalarMap[str, str]
    reason: str
    def __init__(self, hosts: _Optional[_Iterable[str]] = ..., selector: _Optional[_Mapping[str, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class CordonResponse(_message.Message):
    __slots__ = ("hosts", "changed")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[_types_pb2.Host]
    changed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hosts: _Optional[_Iterable[_Union[_types_pb2.Host, _Mapping]]] = ..., changed: _Optional[_Iterable[str]] = ...) -> None: ...

class UncordonRequest(_message.Message):
    __slots__ = ("hosts", "selector")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    selector: _containers.ScalarMap[str, str]
    def __init__(self, hosts: _Optional[_Iterable[str]] = ..., selector: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UncordonResponse(_message.Message):
    __slots__ = ("hosts", "changed")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[_types_pb2.Host]
    changed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hosts: _Optional[_Iterable[_Union[_types_pb2.Host, _Mapping]]] = ..., changed: _Optional[_Iterable[str]] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("hosts", "selector", "deadline_ms", "on_deadline", "max_parallel", "ignore_daemons", "reason")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    ON_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    IGNORE_DAEMONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    selector: _containers.ScalarMap[str, str]
    deadline_ms: int
    on_deadline: str
    max_parallel: int
    ignore_daemons: bool
    reason: str
    def __init__(self, hosts: _Optional[_Iterable[str]] = ..., selector: _Optional[_Mapping[str, str]] = ..., deadline_ms: _Optional[int] = ..., on_deadline: _Optional[str] = ..., max_parallel: _Optional[int] = ..., ignore_daemons: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("operation", "created")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    created: bool
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class PlanDrainRequest(_message.Message):
    __slots__ = ("hosts", "selector", "max_parallel", "ignore_daemons")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    IGNORE_DAEMONS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    selector: _containers.ScalarMap[str, str]
    max_parallel: int
    ignore_daemons: bool
    def __init__(self, hosts: _Optional[_Iterable[str]] = ..., selector: _Optional[_Mapping[str, str]] = ..., max_parallel: _Optional[int] = ..., ignore_daemons: _Optional[bool] = ...) -> None: ...

class PlannedMove(_message.Message):
    __slots__ = ("instance", "workload", "source", "target", "kind", "wave", "starts_at_s", "done_at_s")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_S_FIELD_NUMBER: _ClassVar[int]
    DONE_AT_S_FIELD_NUMBER: _ClassVar[int]
    instance: str
    workload: str
    source: str
    target: str
    kind: str
    wave: int
    starts_at_s: float
    done_at_s: float
    def __init__(self, instance: _Optional[str] = ..., workload: _Optional[str] = ..., source: _Optional[str] = ..., target: _Optional[str] = ..., kind: _Optional[str] = ..., wave: _Optional[int] = ..., starts_at_s: _Optional[float] = ..., done_at_s: _Optional[float] = ...) -> None: ...

class PlanDrainResponse(_message.Message):
    __slots__ = ("moves", "blockers", "waves", "remaining", "eta_s", "hosts")
    MOVES_FIELD_NUMBER: _ClassVar[int]
    BLOCKERS_FIELD_NUMBER: _ClassVar[int]
    WAVES_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    moves: _containers.RepeatedCompositeFieldContainer[PlannedMove]
    blockers: _containers.RepeatedCompositeFieldContainer[Blocker]
    waves: int
    remaining: int
    eta_s: float
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, moves: _Optional[_Iterable[_Union[PlannedMove, _Mapping]]] = ..., blockers: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ..., waves: _Optional[int] = ..., remaining: _Optional[int] = ..., eta_s: _Optional[float] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class Blocker(_message.Message):
    __slots__ = ("instance", "workload", "host", "reason", "message", "since", "runbook", "next_command", "replacement")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    RUNBOOK_FIELD_NUMBER: _ClassVar[int]
    NEXT_COMMAND_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENT_FIELD_NUMBER: _ClassVar[int]
    instance: str
    workload: str
    host: str
    reason: str
    message: str
    since: _timestamp_pb2.Timestamp
    runbook: str
    next_command: str
    replacement: str
    def __init__(self, instance: _Optional[str] = ..., workload: _Optional[str] = ..., host: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runbook: _Optional[str] = ..., next_command: _Optional[str] = ..., replacement: _Optional[str] = ...) -> None: ...

class DrainParams(_message.Message):
    __slots__ = ("deadline_ms", "on_deadline", "max_parallel", "ignore_daemons")
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    ON_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    IGNORE_DAEMONS_FIELD_NUMBER: _ClassVar[int]
    deadline_ms: int
    on_deadline: str
    max_parallel: int
    ignore_daemons: bool
    def __init__(self, deadline_ms: _Optional[int] = ..., on_deadline: _Optional[str] = ..., max_parallel: _Optional[int] = ..., ignore_daemons: _Optional[bool] = ...) -> None: ...

class OperationProgress(_message.Message):
    __slots__ = ("moved", "remaining", "blocked", "in_flight", "eta_s", "blockers")
    MOVED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    BLOCKERS_FIELD_NUMBER: _ClassVar[int]
    moved: int
    remaining: int
    blocked: int
    in_flight: int
    eta_s: float
    blockers: _containers.RepeatedCompositeFieldContainer[Blocker]
    def __init__(self, moved: _Optional[int] = ..., remaining: _Optional[int] = ..., blocked: _Optional[int] = ..., in_flight: _Optional[int] = ..., eta_s: _Optional[float] = ..., blockers: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "kind", "state", "hosts", "params", "actor", "reason", "runbook", "progress", "message", "forced", "created_at", "started_at", "finished_at", "deadline_at", "blocked_since", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RUNBOOK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_AT_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_SINCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    state: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    params: DrainParams
    actor: str
    reason: str
    runbook: str
    progress: OperationProgress
    message: str
    forced: bool
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    deadline_at: _timestamp_pb2.Timestamp
    blocked_since: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[DrainParams, _Mapping]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., runbook: _Optional[str] = ..., progress: _Optional[_Union[OperationProgress, _Mapping]] = ..., message: _Optional[str] = ..., forced: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., blocked_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListOperationsRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class ListOperationsResponse(_message.Message):
    __slots__ = ("operations",)
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    def __init__(self, operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ...) -> None: ...

class CancelOperationRequest(_message.Message):
    __slots__ = ("id", "uncordon")
    ID_FIELD_NUMBER: _ClassVar[int]
    UNCORDON_FIELD_NUMBER: _ClassVar[int]
    id: str
    uncordon: bool
    def __init__(self, id: _Optional[str] = ..., uncordon: _Optional[bool] = ...) -> None: ...

class WatchOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("name", "role", "host", "created_at", "created_by", "revoked_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    host: str
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., host: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("info", "token")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    info: Token
    token: str
    def __init__(self, info: _Optional[_Union[Token, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResetHostCredentialRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: str
    def __init__(self, host: _Optional[str] = ...) -> None: ...

class ResetHostCredentialResponse(_message.Message):
    __slots__ = ("had_credential",)
    HAD_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    had_credential: bool
    def __init__(self, had_credential: _Optional[bool] = ...) -> None: ...

class Revision(_message.Message):
    __slots__ = ("number", "actor", "reason", "created_at", "same_as", "state", "state_since", "completed_at", "spec", "current", "failure")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SAME_AS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    number: int
    actor: str
    reason: str
    created_at: _timestamp_pb2.Timestamp
    same_as: int
    state: str
    state_since: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    spec: _types_pb2.WorkloadSpec
    current: bool
    failure: RolloutFailure
    def __init__(self, number: _Optional[int] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., same_as: _Optional[int] = ..., state: _Optional[str] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spec: _Optional[_Union[_types_pb2.WorkloadSpec, _Mapping]] = ..., current: _Optional[bool] = ..., failure: _Optional[_Union[RolloutFailure, _Mapping]] = ...) -> None: ...

class RolloutFailure(_message.Message):
    __slots__ = ("reason", "message", "evidence", "runbook", "next_command", "at", "rolled_back_to")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    RUNBOOK_FIELD_NUMBER: _ClassVar[int]
    NEXT_COMMAND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_TO_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    evidence: _containers.RepeatedCompositeFieldContainer[RolloutEvidence]
    runbook: str
    next_command: str
    at: _timestamp_pb2.Timestamp
    rolled_back_to: int
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., evidence: _Optional[_Iterable[_Union[RolloutEvidence, _Mapping]]] = ..., runbook: _Optional[str] = ..., next_command: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rolled_back_to: _Optional[int] = ...) -> None: ...

class RolloutEvidence(_message.Message):
    __slots__ = ("instance", "host", "reason", "last_exit", "message")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    instance: str
    host: str
    reason: str
    last_exit: str
    message: str
    def __init__(self, instance: _Optional[str] = ..., host: _Optional[str] = ..., reason: _Optional[str] = ..., last_exit: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetRolloutHistoryRequest(_message.Message):
    __slots__ = ("workload",)
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    workload: str
    def __init__(self, workload: _Optional[str] = ...) -> None: ...

class GetRolloutHistoryResponse(_message.Message):
    __slots__ = ("revisions",)
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[Revision]
    def __init__(self, revisions: _Optional[_Iterable[_Union[Revision, _Mapping]]] = ...) -> None: ...

class GetRolloutStatusRequest(_message.Message):
    __slots__ = ("workload",)
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    workload: str
    def __init__(self, workload: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("workload", "revision", "state", "desired", "updated", "ready", "old_remaining", "canaries", "paused", "paused_by", "paused_at", "message", "failure", "since")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    OLD_REMAINING_FIELD_NUMBER: _ClassVar[int]
    CANARIES_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_BY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    workload: str
    revision: int
    state: str
    desired: int
    updated: int
    ready: int
    old_remaining: int
    canaries: int
    paused: bool
    paused_by: str
    paused_at: _timestamp_pb2.Timestamp
    message: str
    failure: RolloutFailure
    since: _timestamp_pb2.Timestamp
    def __init__(self, workload: _Optional[str] = ..., revision: _Optional[int] = ..., state: _Optional[str] = ..., desired: _Optional[int] = ..., updated: _Optional[int] = ..., ready: _Optional[int] = ..., old_remaining: _Optional[int] = ..., canaries: _Optional[int] = ..., paused: _Optional[bool] = ..., paused_by: _Optional[str] = ..., paused_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., failure: _Optional[_Union[RolloutFailure, _Mapping]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RolloutActionRequest(_message.Message):
    __slots__ = ("workload", "reason")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workload: str
    reason: str
    def __init__(self, workload: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UndoRolloutRequest(_message.Message):
    __slots__ = ("workload", "to_revision", "reason")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workload: str
    to_revision: int
    reason: str
    def __init__(self, workload: _Optional[str] = ..., to_revision: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class UndoRolloutResponse(_message.Message):
    __slots__ = ("workload", "revision", "to_revision")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    workload: _types_pb2.Workload
    revision: int
    to_revision: int
    def __init__(self, workload: _Optional[_Union[_types_pb2.Workload, _Mapping]] = ..., revision: _Optional[int] = ..., to_revision: _Optional[int] = ...) -> None: ...

class FreezeRequest(_message.Message):
    __slots__ = ("reason", "until", "until_in")
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    UNTIL_IN_FIELD_NUMBER: _ClassVar[int]
    reason: str
    until: _timestamp_pb2.Timestamp
    until_in: _duration_pb2.Duration
    def __init__(self, reason: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until_in: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class UnfreezeRequest(_message.Message):
    __slots__ = ("alert", "all")
    ALERT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    alert: str
    all: bool
    def __init__(self, alert: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class GetFreezeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeployFreeze(_message.Message):
    __slots__ = ("source", "reason", "actor", "since", "until")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    source: str
    reason: str
    actor: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, source: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FreezeStatus(_message.Message):
    __slots__ = ("frozen", "freezes", "lifted")
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    FREEZES_FIELD_NUMBER: _ClassVar[int]
    LIFTED_FIELD_NUMBER: _ClassVar[int]
    frozen: bool
    freezes: _containers.RepeatedCompositeFieldContainer[DeployFreeze]
    lifted: _containers.RepeatedCompositeFieldContainer[DeployFreeze]
    def __init__(self, frozen: _Optional[bool] = ..., freezes: _Optional[_Iterable[_Union[DeployFreeze, _Mapping]]] = ..., lifted: _Optional[_Iterable[_Union[DeployFreeze, _Mapping]]] = ...) -> None: ...
