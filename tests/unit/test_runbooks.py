"""Runbooks stay complete and true: one per alert and per stuck reason, with the five sections,
live links, and keelctl commands that keelctl's own parser accepts.

Reads the alert rules (deploy/prometheus/*.rules.yml), the stuck reasons and their guides
(keel.stuck), and the markdown under runbooks/ and docs/; parses commands with
keel.ctl.main.build_parser. The Prometheus side (promtool, metric names, the dashboard) is
tested in test_prometheus_rules.py.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.ctl.main import build_parser
from keel.stuck import GUIDES, Reason, next_command

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
DOCS = ROOT / "docs"
RULE_FILES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))
# Alerts link their runbook on the repository's web view; the rest of the URL is the repo path.
RUNBOOK_URL_BASE = "https://github.com/keel-project/keel/blob/main/"
SECTIONS = ("Symptom", "Impact", "Diagnosis", "Mitigation", "Prevention")
# Upper-case placeholders in runbook commands, and what the test puts in their place.
PLACEHOLDERS = {
    "HOST": "host-1",
    "INSTANCE": "web-1-abc123",
    "WORKLOAD": "web",
    "FILE": "examples/web.yaml",
    "OBJECT": "workload/web",
    "OPERATION": "op-000001",
}
_PLACEHOLDER = re.compile(r"\b(" + "|".join(PLACEHOLDERS) + r")\b")
_SH_BLOCK = re.compile(r"^[ \t]*```(?:sh|bash|shell)[ \t]*\n(.*?)^[ \t]*```", re.M | re.S)
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Shell operators end the keelctl part of a line (`keelctl -o json stuck | jq ...`).
_SHELL_OPERATORS = frozenset({"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "(", ")"})


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def alert_names() -> list[str]:
    return sorted({r["alert"] for r in alert_rules()})


def runbook_files() -> list[Path]:
    """Every runbook (the README is an index, not a runbook)."""
    return sorted(p for p in RUNBOOKS.rglob("*.md") if p.name != "README.md")


def markdown_files() -> list[Path]:
    return sorted([*RUNBOOKS.rglob("*.md"), *DOCS.rglob("*.md")])


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def kebab(reason: Reason) -> str:
    return reason.value.lower().replace("_", "-")


@dataclass(frozen=True)
class Command:
    path: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{rel(self.path)}:{self.line}: {self.text}"


def keelctl_commands(path: Path) -> list[Command]:
    """The keelctl command lines in the file's sh code blocks (continuations joined)."""
    text = path.read_text(encoding="utf-8")
    commands = []
    for block in _SH_BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        pending = ""
        start = first_line
        for offset, raw in enumerate(block.group(1).splitlines()):
            if not pending:
                start = first_line + offset
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if line.split(maxsplit=1)[:1] == ["keelctl"]:
                commands.append(Command(path, start, line))
    return commands


def argv_of(line: str) -> list[str]:
    """The words keelctl would get: placeholders filled, cut at the first shell operator."""
    filled = _PLACEHOLDER.sub(lambda m: PLACEHOLDERS[m.group(1)], line)
    lexer = shlex.shlex(filled, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word in _SHELL_OPERATORS:
            break
        words.append(word)
    return words


def keelctl_refusal(argv: list[str]) -> str | None:
    """None if keelctl's parser accepts argv (without the program name), else its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        return f"exit {e.code}: {err.getvalue().strip()}"
    return None


ALL_COMMANDS = [c for path in markdown_files() for c in keelctl_commands(path)]


# --- alerts ------------------------------------------------------------------------------------


def test_alert_rules_are_found() -> None:
    """The rule files exist and hold alerts (a wrong path would make every other test vacuous)."""
    assert RULE_FILES, "no deploy/prometheus/*.rules.yml"
    assert len(alert_names()) >= 7


@pytest.mark.parametrize("alert", alert_names())
def test_every_alert_has_a_runbook(alert: str) -> None:
    """runbooks/alerts/<AlertName>.md exists for every alert."""
    path = RUNBOOKS / "alerts" / f"{alert}.md"
    assert path.is_file(), f"alert {alert} has no runbook: create {rel(path)}"


@pytest.mark.parametrize(
    "rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r.get('labels', {}).get('severity')}"
)
def test_every_runbook_url_maps_to_the_alerts_runbook_file(rule: dict[str, Any]) -> None:
    """Each alert's runbook_url is the repository URL of runbooks/alerts/<AlertName>.md."""
    url = rule.get("annotations", {}).get("runbook_url", "")
    assert url.startswith(RUNBOOK_URL_BASE), f"{rule['alert']}: runbook_url {url!r}"
    path = ROOT / url.removeprefix(RUNBOOK_URL_BASE)
    assert path.is_file(), f"{rule['alert']}: runbook_url points at {rel(path)}, which is missing"
    assert path == RUNBOOKS / "alerts" / f"{rule['alert']}.md"


def test_stuck_alert_links_the_runbook_of_its_reason() -> None:
    """KeelStuckObjects' reason_runbook_url template yields GUIDES' runbook path for each reason."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "KeelStuckObjects"]
    template = rule["annotations"]["reason_runbook_url"]
    expected = (
        RUNBOOK_URL_BASE + 'runbooks/stuck/{{ $labels.reason | toLower | reReplaceAll "_" "-" }}.md'
    )
    assert template == expected
    # What that template renders to (lower case, "_" -> "-") is the guide's runbook, for every
    # reason; promtool renders it for real in deploy/prometheus/tests/fleet.test.yml.
    for reason in Reason:
        assert GUIDES[reason].runbook == f"runbooks/stuck/{kebab(reason)}.md"


# --- stuck reasons -----------------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_stuck_reason_has_a_runbook(reason: Reason) -> None:
    """Every reason has a guide whose runbook file exists at runbooks/stuck/<reason-kebab>.md."""
    assert reason in GUIDES, f"{reason} has no guide in keel.stuck.GUIDES"
    path = ROOT / GUIDES[reason].runbook
    assert path.is_file(), f"{reason}: runbook {GUIDES[reason].runbook} is missing"


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_stuck_runbook_shows_its_next_command(reason: Reason) -> None:
    """The next command keelctl prints for a reason appears in that reason's runbook."""
    command = next_command(reason, instance="INSTANCE", workload="WORKLOAD", host="HOST")
    lines = [c.text for c in keelctl_commands(ROOT / GUIDES[reason].runbook)]
    assert command in lines, f"{GUIDES[reason].runbook} never shows `{command}` in an sh block"


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_guides_next_command_is_accepted_by_keelctl(reason: Reason) -> None:
    """The next command a stuck object carries is one keelctl's parser accepts."""
    command = next_command(reason, instance="web-1-abc123", workload="web", host="host-1")
    refusal = keelctl_refusal(argv_of(command)[1:])
    assert refusal is None, f"keelctl refuses `{command}`: {refusal}"


# --- runbook shape -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", runbook_files(), ids=rel)
def test_every_runbook_has_the_five_sections_in_order(path: Path) -> None:
    """Symptom, Impact, Diagnosis, Mitigation, Prevention, as level-2 headings, in that order."""
    headings = re.findall(r"^## (.+?)\s*$", path.read_text(encoding="utf-8"), re.M)
    missing = [s for s in SECTIONS if s not in headings]
    assert not missing, f"{rel(path)} lacks ## {', ## '.join(missing)}"
    assert [h for h in headings if h in SECTIONS] == list(SECTIONS), f"{rel(path)}: {headings}"


@pytest.mark.parametrize("path", runbook_files(), ids=rel)
def test_every_runbook_has_keelctl_commands(path: Path) -> None:
    """Each runbook gives at least one keelctl command to run, in an sh code block."""
    assert keelctl_commands(path), f"{rel(path)} has no keelctl command in a ```sh block"


def test_runbook_index_links_every_runbook() -> None:
    """runbooks/README.md links every runbook, so none is orphaned."""
    index = RUNBOOKS / "README.md"
    linked = {
        (index.parent / target.split("#")[0]).resolve()
        for target in _LINK.findall(_CODE.sub("", index.read_text(encoding="utf-8")))
        if "://" not in target and not target.startswith("#")
    }
    orphans = [rel(p) for p in runbook_files() if p.resolve() not in linked]
    assert not orphans, f"runbooks/README.md does not link: {orphans}"


@pytest.mark.parametrize("path", markdown_files(), ids=rel)
def test_relative_links_resolve(path: Path) -> None:
    """Every relative markdown link in runbooks/ and docs/ points at a file that exists."""
    text = _CODE.sub("", path.read_text(encoding="utf-8"))
    dead = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor in the same file
        if not (path.parent / target.split("#")[0]).exists():
            dead.append(target)
    assert not dead, f"{rel(path)} has dead links: {dead}"


# --- commands ----------------------------------------------------------------------------------


def test_runbook_commands_are_found() -> None:
    """The sh-block scanner finds the runbooks' keelctl commands (it must not silently see none)."""
    assert len(ALL_COMMANDS) >= 40
    assert any("stuck" in c.text for c in ALL_COMMANDS)


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_runbook_keelctl_commands_are_accepted_by_keelctl(command: Command) -> None:
    """keelctl's own parser accepts the command, placeholders filled in."""
    argv = argv_of(command.text)
    assert argv[0] == "keelctl"
    refusal = keelctl_refusal(argv[1:])
    assert refusal is None, f"{command}\nkeelctl {shlex.join(argv[1:])} is refused: {refusal}"


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        ("keelctl get hosts", ["keelctl", "get", "hosts"]),
        ("keelctl describe host HOST", ["keelctl", "describe", "host", "host-1"]),
        (
            "keelctl events --for instance/INSTANCE  # its history",
            ["keelctl", "events", "--for", "instance/web-1-abc123"],
        ),
        ("keelctl -o json stuck | jq '.objects'", ["keelctl", "-o", "json", "stuck"]),
        (
            "keelctl apply -f FILE && keelctl get workloads",
            ["keelctl", "apply", "-f", "examples/web.yaml"],
        ),
        # Placeholders are whole words only: KEEL_HOST stays as it is.
        (
            "keelctl get instances --host KEEL_HOST",
            ["keelctl", "get", "instances", "--host", "KEEL_HOST"],
        ),
    ],
)
def test_argv_of_fills_placeholders_and_stops_at_shell_operators(
    line: str, argv: list[str]
) -> None:
    """The command scanner fills placeholders and hands keelctl only its own words."""
    assert argv_of(line) == argv


def test_keelctl_refusal_reports_an_unknown_command() -> None:
    """A command keelctl does not know is refused with argparse's message, not accepted."""
    refusal = keelctl_refusal(["frobnicate", "host-1"])
    assert refusal is not None and "invalid choice" in refusal
