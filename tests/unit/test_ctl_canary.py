"""keelctl rollout promote and abort: their command lines, the call they make, what they print,
and a refusal from the control plane, against an in-test FleetService."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from keel.ctl.main import build_parser, main
from keel.v1 import fleet_pb2, fleet_pb2_grpc


class CanaryFleet(fleet_pb2_grpc.FleetServiceServicer):  # type: ignore[misc]
    """Answers promote and abort for `web` (recording the requests); refuses any other name
    as the control plane does when no canary waits."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, fleet_pb2.RolloutActionRequest]] = []

    def _answer(self, method: str, request: Any, context: Any) -> fleet_pb2.RolloutStatus:
        self.calls.append((method, request))
        if request.workload != "web":
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'workload "{request.workload}" has no canary awaiting promotion (revision 1); '
                f"see `keelctl rollout status {request.workload}`",
            )
        if method == "PromoteRollout":
            return fleet_pb2.RolloutStatus(
                workload="web",
                revision=2,
                state="PROGRESSING",
                desired=3,
                updated=1,
                ready=1,
                old_remaining=3,
                message="revision 2 promoted by alice: the rollout continues",
            )
        return fleet_pb2.RolloutStatus(
            workload="web",
            revision=3,
            state="PROGRESSING",
            desired=3,
            updated=3,
            ready=3,
            old_remaining=1,
            message="revision 2 aborted by alice: its canaries are removed; the spec of "
            "revision 1 runs again as revision 3, its instances kept",
        )

    def PromoteRollout(self, request: Any, context: Any) -> fleet_pb2.RolloutStatus:
        return self._answer("PromoteRollout", request, context)

    def AbortRollout(self, request: Any, context: Any) -> fleet_pb2.RolloutStatus:
        return self._answer("AbortRollout", request, context)


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[CanaryFleet, str]]:
    servicer = CanaryFleet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["rollout", "promote", "web"], {"rollout_command": "promote", "reason": ""}),
        (["rollout", "abort", "web", "--reason", "p99 up"], {"reason": "p99 up"}),
        (["rollout", "promote", "web", "-o", "json"], {"output": "json", "workload": "web"}),
    ],
)
def test_promote_and_abort_command_lines_parse(argv: list[str], expected: dict[str, Any]) -> None:
    """A workload and an optional reason, with the global options after the verb too."""
    args = build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize(
    "argv", [["rollout", "promote"], ["rollout", "abort", "web", "extra"], ["rollout"]]
)
def test_malformed_promote_and_abort_lines_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """No workload, two of them, or no verb: a usage error before any call."""
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_promote_prints_what_was_done_and_the_rollout_now(
    fleet: tuple[CanaryFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The call carries the workload and the reason; the answer is four lines."""
    servicer, addr = fleet
    assert main(["--controlplane", addr, "rollout", "promote", "web", "--reason", "ok"]) == 0
    assert servicer.calls[-1] == (
        "PromoteRollout",
        fleet_pb2.RolloutActionRequest(workload="web", reason="ok"),
    )
    assert capsys.readouterr().out == (
        "workload/web promoted: revision 2 PROGRESSING\n"
        "  revision 2 promoted by alice: the rollout continues\n"
        "  updated 1/3 (1 ready), old remaining 3\n"
        "  follow it: keelctl rollout status web\n"
    )


def test_abort_prints_the_revision_it_returned_to(
    fleet: tuple[CanaryFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, addr = fleet
    assert main(["--controlplane", addr, "rollout", "abort", "web"]) == 0
    assert servicer.calls[-1][0] == "AbortRollout"
    out = capsys.readouterr().out
    assert out.startswith("workload/web canaries aborted: revision 3 PROGRESSING\n")
    assert "the spec of revision 1 runs again as revision 3" in out


def test_abort_as_json_is_the_rollout_status(
    fleet: tuple[CanaryFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, addr = fleet
    assert main(["--controlplane", addr, "rollout", "abort", "web", "-o", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["workload"], status["revision"], status["canaries"]) == ("web", 3, 0)


@pytest.mark.parametrize("verb", ["promote", "abort"])
def test_no_canary_waiting_is_one_error_line_and_exit_1(
    verb: str, fleet: tuple[CanaryFleet, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The control plane's refusal, as it said it, with its code."""
    _, addr = fleet
    assert main(["--controlplane", addr, "rollout", verb, "api"]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: workload "api" has no canary awaiting promotion (revision 1)')
    assert "(FAILED_PRECONDITION)" in err
