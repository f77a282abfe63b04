"""keelctl drain --wait and op watch across replicas: a watch cut off by its replica going
away goes on, as `op watch`, on another replica; the drain is not asked for again.

Two real gRPC servers in this process stand in for the replicas: one answers the drain and
then drops the watch stream with UNAVAILABLE (a replica stopping), the other serves the rest
of the watch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from keel.ctl.main import main
from keel.v1 import fleet_pb2, fleet_pb2_grpc


def _op(state: str, moved: int) -> fleet_pb2.Operation:
    op = fleet_pb2.Operation(id="op-000007", kind="drain", state=state, hosts=["host-1"])
    op.progress.moved = moved
    op.progress.remaining = 2 - moved
    op.runbook = "runbooks/cordon-and-drain.md"
    return op


class Replica(fleet_pb2_grpc.FleetServiceServicer):  # type: ignore[misc]
    """Answers Drain; its watch sends `states` and then, for its first `drops` watches, goes
    away mid-stream."""

    def __init__(self, states: list[tuple[str, int]], *, drops: int) -> None:
        self.states = states
        self.drops = drops
        self.drains = 0
        self.watches = 0

    def Drain(self, request: Any, context: grpc.ServicerContext) -> fleet_pb2.DrainResponse:
        self.drains += 1
        return fleet_pb2.DrainResponse(operation=_op("RUNNING", 0), created=True)

    def WatchOperation(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[fleet_pb2.Operation]:
        self.watches += 1
        for state, moved in self.states:
            yield _op(state, moved)
        if self.watches <= self.drops:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the control plane is stopping")


def test_a_drain_whose_watch_is_cut_off_is_watched_to_the_end_on_the_other_replica(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    first = Replica([("RUNNING", 1)], drops=99)
    second = Replica([("RUNNING", 1), ("SUCCEEDED", 2)], drops=0)
    a, b = serve(first), serve(second)

    status = main(["--controlplane", f"{a},{b}", "drain", "host-1", "--wait"])

    err = capsys.readouterr().err
    assert status == 0, err
    assert f"lost the control plane at {a} while watching op-000007" in err
    assert (first.drains, first.watches, second.drains, second.watches) == (1, 1, 0, 1)


def test_a_watch_cut_off_on_the_last_replica_goes_on_on_the_first(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first replica restarts (its first watch is cut off), then the last one goes away:
    keelctl wraps around to the first, which is back, and watches the drain end FAILED."""
    first = Replica([("RUNNING", 1), ("FAILED", 1)], drops=1)
    last = Replica([("RUNNING", 1)], drops=99)
    a, b = serve(first), serve(last)

    status = main(["--controlplane", f"{a},{b}", "op", "watch", "op-000007"])

    assert status == 1  # the operation FAILED: watched to its end
    assert (first.watches, last.watches) == (2, 1)
    assert "watching it on another replica" in capsys.readouterr().err


def test_a_replica_that_keeps_dropping_the_watch_is_given_up_on(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    flaky = Replica([("RUNNING", 0)], drops=99)
    a = serve(flaky)

    status = main(["--controlplane", a, "op", "watch", "op-000007"])

    err = capsys.readouterr().err
    assert status == 1
    assert "it goes on: keelctl op watch op-000007" in err
    assert flaky.watches == 6  # the first watch and five resumes
