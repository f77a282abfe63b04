"""keel-controlplane's command line: options are kept wherever they are given."""

from __future__ import annotations

import pytest

from controlplane.flags import build_parser, settings_from


@pytest.mark.parametrize(
    "argv",
    [
        ["--listen", "127.0.0.1:0", "--metrics", "off", "--resync-period", "3s", "serve"],
        ["serve", "--listen", "127.0.0.1:0", "--metrics", "off", "--resync-period", "3s"],
        ["--listen", "127.0.0.1:0", "--metrics", "off", "--resync-period", "3s"],
    ],
    ids=["before-serve", "after-serve", "no-subcommand"],
)
def test_options_before_or_after_serve_are_kept(argv: list[str]) -> None:
    """An option given before `serve` is not reset by the subcommand's default."""
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    assert (settings.listen, args.metrics, settings.resync_period_s) == ("127.0.0.1:0", "off", 3.0)


def test_defaults_hold_with_or_without_serve() -> None:
    for argv in ([], ["serve"]):
        args = build_parser().parse_args(argv)
        assert settings_from(args).resync_period_s == 30.0
        assert args.metrics == "127.0.0.1:9464"
