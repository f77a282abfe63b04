"""Which user a workload's process runs as (`spec.user`), for the process driver.

`agent.runtime.process.ProcessDriver.start` resolves the spec's user here (`resolve`, in a
thread: the user database may be NSS-backed) and passes `RunAs.drop` to the child as its
`preexec_fn`: uvloop, the agent's event loop, refuses subprocess's `user=`/`group=`/
`extra_groups=`, so the child drops its privileges itself between fork and exec. The function
only makes three system calls with arguments computed beforehand (no imports, no locks), which
is what keeps a preexec function safe in a process with threads.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from agent.errors import StartFailed


@dataclass(frozen=True)
class RunAs:
    """A user to become: uid, primary gid and supplementary groups."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    def drop(self) -> None:
        """In the child, before exec: groups first, then gid, then uid (after setuid the
        process may no longer change its groups)."""
        os.setgroups(self.groups)
        os.setgid(self.gid)
        os.setuid(self.uid)


def resolve(user: str) -> RunAs | None:
    """The identity to start as, or None for the agent's own; StartFailed when the user does
    not exist on this host or the agent may not become it."""
    if not user:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StartFailed(
            f"user {user!r} (spec.user) does not exist on this host; create it, or change spec.user"
        ) from None
    own = os.geteuid()
    if own == entry.pw_uid:
        return None  # already that user: nothing to drop
    if own != 0:
        raise StartFailed(
            f"cannot start as user {user!r} (spec.user): the agent runs as uid {own}, not "
            "root, and only root may start a process as another user"
        )
    groups = tuple(os.getgrouplist(user, entry.pw_gid))
    return RunAs(user=user, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups)
