"""The mass-failure brake's rules, pure: when it holds, and what it leaves once it lets go.

When more than `max_unready_share` of the hosts are not READY, or none is, the silence is more
likely the control plane's side of the network than that many hosts failing at once, and
`liveness.judge` fences nothing (`brake_of`). Hosts GONE (not READY past `--gone-after`) are
left out of the share, unless not one host is READY (`brake_beside_gone`). When it lets go, a
host silent while it held is fenced only `reschedule_after` past the release
(`after_release`): a partition heals host by host. Neighbours: `liveness` (the judge and its
controller, which records the brake's events), tests/unit/test_liveness.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Brake:
    """The mass-failure brake: `down` of `hosts` are not READY."""

    down: int
    hosts: int

    @property
    def share(self) -> float:
        return self.down / self.hosts if self.hosts else 0.0

    def describe(self, max_share: float) -> str:
        return (
            f"{self.down} of {self.hosts} hosts are not READY ({self.share:.0%}; the brake "
            f"holds above {max_share:.0%} or when none is READY)"
        )


def brake_of(down: int, hosts: int, *, max_share: float) -> Brake | None:
    """The brake, engaged when more than `max_share` of `hosts` are not READY or none is."""
    if hosts == 0 or down == 0:
        return None
    if down == hosts or down / hosts > max_share:
        return Brake(down, hosts)
    return None


def brake_beside_gone(down: int, gone: int, hosts: int, *, max_share: float) -> Brake | None:
    """The brake for `down` hosts not READY and `gone` GONE (neither READY) of `hosts`: the
    GONE ones are left out of the share, but with not one host READY it holds whatever is
    gone (fencing everything would replace nothing and stop it all when the network heals)."""
    if gone and down + gone == hosts:
        return brake_of(hosts, hosts, max_share=max_share)
    return brake_of(down, hosts - gone, max_share=max_share)


def after_release(
    down_since: datetime, released_at: datetime, *, now: datetime, wait_s: float
) -> bool:
    """Whether a host down since `down_since` may be fenced now, the brake having let go at
    `released_at`: its silence counts from the later of the two."""
    return (now - max(down_since, released_at)).total_seconds() > wait_s
