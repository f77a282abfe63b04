"""controlplane.logbus: logs asked on one replica, served by the replica holding the stream.

Postgres is stood in for by `Bus`, which delivers every published notification to every
replica's LogBus on the next turn of the loop, in publish order (as LISTEN does in commit
order); the agent by `Agent`, which answers a LogRequest sent on its stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from waiting import eventually

from controlplane.logbus import PART_BYTES, LogBus, NoHolder, chunk_messages
from controlplane.logrelay import LogRelay
from keel.v1 import agent_pb2, types_pb2


class Agent:
    """One host's stream: records what the control plane sent, answers log requests."""

    def __init__(self, answer: Callable[[str], list[types_pb2.LogChunk]]) -> None:
        self.answer = answer
        self.sent: list[agent_pb2.ControlMessage] = []
        self.relay: LogRelay | None = None

    def send(self, msg: agent_pb2.ControlMessage) -> None:
        self.sent.append(msg)
        req = msg.log_request
        if req.request_id and not req.cancel and self.relay is not None:
            relay = self.relay
            for chunk in self.answer(req.request_id):
                asyncio.get_running_loop().call_soon(relay.deliver, chunk)

    def cancelled(self) -> bool:
        return any(m.log_request.cancel for m in self.sent)


class Streams:
    def __init__(self, streams: dict[str, Agent]) -> None:
        self.streams = streams

    def get(self, host: str) -> Agent | None:
        return self.streams.get(host)


class Bus:
    """Every replica hears every notification, in the order published."""

    def __init__(self) -> None:
        self.replicas: list[LogBus] = []
        self.published: list[dict[str, object]] = []

    async def publish(self, payloads: Sequence[str]) -> None:
        loop = asyncio.get_running_loop()
        for payload in payloads:
            self.published.append(json.loads(payload))
            for replica in self.replicas:
                loop.call_soon(replica.received, payload)

    def replica(self, streams: dict[str, Agent], *, lease_s: float = 10.0) -> LogBus:
        relay = LogRelay(Streams(streams))
        for agent in streams.values():
            agent.relay = relay
        bus = LogBus(relay, publish=self.publish, lease_s=lease_s, ack_s=0.5)
        self.replicas.append(bus)
        return bus


async def collect(chunks: AsyncIterator[types_pb2.LogChunk]) -> list[types_pb2.LogChunk]:
    return [c async for c in chunks]


def chunks_of(*parts: tuple[str, bytes]) -> Callable[[str], list[types_pb2.LogChunk]]:
    def answer(rid: str) -> list[types_pb2.LogChunk]:
        out = [types_pb2.LogChunk(request_id=rid, stream=s, data=d) for s, d in parts]
        return [*out, types_pb2.LogChunk(request_id=rid, eof=True)]

    return answer


async def test_a_replica_without_the_stream_gets_the_chunks_whole_and_in_order() -> None:
    big = bytes(range(256)) * (PART_BYTES // 100)  # several notifications' worth
    agent = Agent(chunks_of(("stdout", b"first\n"), ("stderr", big), ("stdout", b"")))
    bus = Bus()
    asker = bus.replica({})
    holder = bus.replica({"host-1": agent})

    got = await collect(asker.fetch("host-1", "web-1", tail_lines=10, follow=False, wait_s=5))

    assert [(c.stream, bytes(c.data)) for c in got[:3]] == [
        ("stdout", b"first\n"),
        ("stderr", big),
        ("stdout", b""),
    ]
    assert got[-1].eof and not got[-1].error
    request = agent.sent[0].log_request
    assert (request.instance_id, request.tail_lines, request.follow) == ("web-1", 10, False)
    await eventually(lambda: len(asker) == 0 and len(holder) == 0)
    assert all(len(json.dumps(m)) < 8000 for m in bus.published)


async def test_no_replica_holding_the_stream_is_told_apart_by_the_missing_ack() -> None:
    bus = Bus()
    asker = bus.replica({})

    with pytest.raises(NoHolder):
        await collect(asker.fetch("host-9", "web-1", tail_lines=10, follow=False, wait_s=5))

    await eventually(lambda: [m["kind"] for m in bus.published] == ["req", "cancel"])
    assert len(asker) == 0


async def test_a_holder_whose_agent_is_silent_is_named_within_the_wait() -> None:
    """The holder acks, its agent sends nothing: the asker's wait ends in an error chunk."""
    bus = Bus()
    asker = bus.replica({})
    bus.replica({"host-1": Agent(lambda rid: [])})

    got = await collect(asker.fetch("host-1", "web-1", tail_lines=10, follow=False, wait_s=0.4))

    assert len(got) == 1 and got[0].eof
    assert 'the agent of host "host-1" did not answer the log request' in got[0].error


async def test_the_agents_own_error_reaches_the_asker() -> None:
    def unknown(rid: str) -> list[types_pb2.LogChunk]:
        return [types_pb2.LogChunk(request_id=rid, eof=True, error="no instance web-7 here")]

    bus = Bus()
    asker = bus.replica({})
    bus.replica({"host-1": Agent(unknown)})

    got = await collect(asker.fetch("host-1", "web-7", tail_lines=1, follow=False, wait_s=5))

    assert [c.error for c in got] == ["no instance web-7 here"]


async def test_a_follower_that_goes_away_stops_the_agent_following() -> None:
    def forever(rid: str) -> list[types_pb2.LogChunk]:
        return [types_pb2.LogChunk(request_id=rid, stream="stdout", data=b"line\n")]

    agent = Agent(forever)
    bus = Bus()
    asker = bus.replica({})
    holder = bus.replica({"host-1": agent})

    chunks = asker.fetch("host-1", "web-1", tail_lines=0, follow=True, wait_s=5)
    first = await anext(chunks)
    assert bytes(first.data) == b"line\n"
    await chunks.aclose()  # keelctl logs -f was interrupted

    await eventually(lambda: agent.cancelled() and len(holder) == 0 and len(asker) == 0)
    assert [m["kind"] for m in bus.published][-1] == "cancel"


async def test_a_follow_whose_asker_died_ends_after_missed_leases() -> None:
    """The asking replica was killed: no cancel ever comes, and its leases stop."""
    agent = Agent(lambda rid: [])
    bus = Bus()
    holder = bus.replica({"host-1": agent}, lease_s=0.05)
    request = {
        "kind": "req",
        "rid": "r1",
        "host": "host-1",
        "instance": "web-1",
        "tail": 0,
        "follow": True,
        "wait": 0.05,
    }
    # The agent answers nothing, so the holder's first-chunk wait ends it too; a following
    # request whose agent did answer is ended by the lease alone (below).
    holder.received(json.dumps(request))
    await eventually(lambda: len(holder) == 1)
    await eventually(lambda: len(holder) == 0)


async def test_a_following_request_lives_while_its_lease_is_renewed() -> None:
    def one_line(rid: str) -> list[types_pb2.LogChunk]:
        return [types_pb2.LogChunk(request_id=rid, stream="stdout", data=b"x\n")]

    agent = Agent(one_line)
    bus = Bus()
    holder = bus.replica({"host-1": agent}, lease_s=0.05)
    base = {"rid": "r2", "host": "host-1", "instance": "web-1", "tail": 0, "follow": True}
    holder.received(json.dumps({**base, "kind": "req", "wait": 0.1}))
    await eventually(lambda: any(m["kind"] == "chunk" for m in bus.published))
    loop = asyncio.get_running_loop()
    end = loop.time() + 0.6  # past the first deadline (0.25 s), renewed every period
    while loop.time() < end:
        holder.received(json.dumps({"kind": "lease", "rid": "r2"}))
        assert len(holder) == 1 and not agent.cancelled()
        await asyncio.sleep(0.05)
    # Renewals stop (the asker died): the holder stops and tells the agent.
    await eventually(lambda: len(holder) == 0 and agent.cancelled())


@pytest.mark.parametrize(
    "payload",
    ["", "not json", "[]", '{"kind": "chunk"}', '{"kind": "req", "rid": "r"}', '"x"'],
)
async def test_a_notification_that_is_not_one_is_ignored(payload: str) -> None:
    bus = Bus()
    replica = bus.replica({"host-1": Agent(lambda rid: [])})
    replica.received(payload)
    assert len(replica) == 0 and bus.published == []


def test_a_chunk_without_data_is_one_notification() -> None:
    messages = chunk_messages("r", types_pb2.LogChunk(eof=True, error="gone"))
    assert [json.loads(m)["parts"] for m in messages] == [1]
