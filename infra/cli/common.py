"""What every command needs: the CLI policy (errors and exit codes, docs/cli.md), checked
arguments (times, files, counts), and the running stack."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from infra.config import Settings
from infra.stack import local_deployment
from infra.stack.embedded import Stack, start_stack

if TYPE_CHECKING:
    from datetime import datetime

    from domain.app.billing_app import BillingApplication

# Exit codes (docs/cli.md).
OK, FAILURE, USAGE, REFUSED, NOT_FOUND = 0, 1, 2, 3, 4
# Refusals by the domain that mean "what you named does not exist".
NOT_FOUND_CODES = frozenset({"unknown_subscription", "unknown_plan", "unknown_pack",
                             "unknown_member", "unknown_workspace",
                             "unknown_addon", "unknown_invoice"})


class CliError(Exception):
    """An error the CLI reports in one line (or one JSON object) and exits with."""

    exit_code = FAILURE

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    exit_code = USAGE


class Refused(CliError):
    exit_code = REFUSED


class NotFound(CliError):
    exit_code = NOT_FOUND


class Failed(CliError):
    exit_code = FAILURE


def not_found(message: str) -> NoReturn:
    raise NotFound(message, "not_found")


def refusal_exit_code(code: str) -> int:
    """A domain refusal's exit code: not found (4) for an unknown name, else refused (3)."""
    return NOT_FOUND if code in NOT_FOUND_CODES else REFUSED


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (main prints it, as text or JSON) instead of
    exiting from inside the parser."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)", "usage")


# Argument types: checked while parsing, so a bad value is a usage error (exit 2).

def moment(text: str) -> datetime:
    """An RFC 3339 date-time with its offset, as on the topics."""
    from domain.contracts.usage import parse_rfc3339

    try:
        return parse_rfc3339(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number from 1 up: {text!r}")
    return int(text)


def count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"a whole number from 0 up: {text!r}")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"a number of seconds above 0: {text!r}")
    return value


def host_port(text: str) -> str:
    _, sep, port = text.rpartition(":")
    if not sep or (port and not port.isdigit()) or (port and int(port) > 65535):
        raise argparse.ArgumentTypeError(f"HOST:PORT (port 0: any free one): {text!r}")
    return text


def time_arg(text: str, flag: str) -> datetime:
    """A time given on the command line: RFC 3339 with its offset, as on the topics."""
    try:
        return moment(text)
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"{flag}: {e}", "invalid_timestamp") from None


def connect(settings: Settings) -> Stack:
    """Where to find a running stack: external settings, or the embedded one `billing run` wrote
    down (its owner must be alive: a file left by a run that died is not trusted)."""
    if settings.stack != "embedded":
        return start_stack(settings)
    info = local_deployment.running_stack(settings)
    if info is None:
        path = local_deployment.stack_file(settings)
        what = (f"the stack in {path} is gone (its `billing run` stopped)" if path.exists()
                else "no running embedded stack")
        raise Failed(f"{what}: start `billing run` in another terminal, or set "
                     "BILLING_STACK=external with BILLING_DATABASE_URL and "
                     "BILLING_KAFKA_BOOTSTRAP", "no_stack")
    return Stack(info["database_url"], info["kafka_bootstrap"], "embedded")


def open_app(settings: Settings) -> BillingApplication:
    """The billing application on the running stack's event store."""
    from infra.wiring.engine import open_billing

    return open_billing(connect(settings).database_url, settings)


def billing_now(app: BillingApplication) -> datetime:
    """The billing clock's time (the engine's business time), or the wall clock's where no
    clock has run: what a command, a preview or "today" means without --at. Commands timed by
    the wall clock after `clock advance` went into the future would be refused as stale."""
    from datetime import UTC
    from datetime import datetime as wall

    clock = app.clock()
    return clock.now if clock is not None else wall.now(UTC)


def at_or_billing_now(at: datetime | None, settings: Settings) -> datetime:
    """`--at` if given; else the billing clock's time, read from the store (opened only then)."""
    if at is not None:
        return at
    app = open_app(settings)
    try:
        return billing_now(app)
    finally:
        app.close()


def error_object(message: str, code: str) -> dict[str, Any]:
    return {"error": message, "code": code}
