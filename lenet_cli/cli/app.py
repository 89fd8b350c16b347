"""The `lenet` app: its commands, and the one place that turns an exception into a message and an exit code.

Each command module (train, evaluate, predict, export, bench, serve, checks) holds its options, one call
into `lenet_cli.api` and its rendering. Errors are not handled there: `exit_code_for` maps
every exception to one line on stderr and an exit code (the traceback only with --debug),
both for errors inside a command and for Typer's own usage errors (see `main`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from lenet_cli import __version__
from lenet_cli.cli import bench, checks, evaluate, export, predict, serve, train
from lenet_cli.cli.console import err, error
from lenet_cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, LenetError, first_line

app = typer.Typer(
    name="lenet",
    help="Train, evaluate, run, export, benchmark and serve LeNet-5 on MNIST.\n\n"
    "Every command works right after install with the bundled model; "
    "run `lenet COMMAND --help` for options and examples.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

state = {"debug": bool(os.environ.get("LENET_DEBUG"))}


def _is_usage_error(exc: BaseException) -> bool:
    """Typer's own errors about the command line (unknown option, bad value, missing argument).

    They come from Typer's private copy of Click, so they are recognised by what every one of
    them has (an exit code and a formatted message), not by importing Click.
    """
    return isinstance(exc, typer.BadParameter) or (hasattr(exc, "format_message") and hasattr(exc, "exit_code"))


def exit_code_for(exc: BaseException) -> int:
    """Say what went wrong in one line on stderr and return the exit code for it.

    LenetError: its message and code (1, or 2 for usage errors). Ctrl-C: 130. A reader that
    closed our stdout (`| head`): quietly 1. Typer's usage errors: one line naming `--help`, 2.
    Anything else is a bug: one line asking for a report, 1.
    """
    if state["debug"] and isinstance(exc, Exception) and not isinstance(exc, (BrokenPipeError, typer.Abort)) \
            and not _is_usage_error(exc):
        err.print_exception()
    if isinstance(exc, LenetError):
        error(str(exc))
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        error("Interrupted.")
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        _quiet_broken_pipe()
        return EXIT_FAILURE
    if isinstance(exc, typer.Abort):
        error("Aborted.")
        return EXIT_FAILURE
    if _is_usage_error(exc):
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "lenet"
        error(f"{exc.format_message().rstrip('.')}. See `{where} --help`.")
        return int(exc.exit_code)
    error(f"Unexpected {type(exc).__name__}: {first_line(exc) if str(exc) else ''} "
          "(run with `lenet --debug ...` for the traceback and report it).")
    return EXIT_FAILURE


def _quiet_broken_pipe() -> None:
    """Point stdout at devnull so the interpreter's final flush cannot fail a second time.

    Python's recipe (docs: signal, "Note on SIGPIPE"). Nothing is printed: the user
    closed the pipe on purpose, and stderr may be the same closed pipe.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (tests, embedding): nothing to protect
        pass


def _handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; any exception becomes `exit_code_for`'s message and exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(exit_code_for(exc)) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lenet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Train, evaluate, run, export, benchmark and serve LeNet-5 on MNIST."""
    if debug:
        state["debug"] = True


app.command(epilog=train.EPILOG)(_handled(train.train))
app.command(name="eval", epilog=evaluate.EPILOG)(_handled(evaluate.eval_))
app.command(epilog=predict.EPILOG)(_handled(predict.predict))
app.command(epilog=export.EPILOG)(_handled(export.export))
app.command(epilog=bench.EPILOG)(_handled(bench.bench))
app.command(epilog=serve.EPILOG)(_handled(serve.serve))
app.command(epilog=checks.EPILOG)(_handled(checks.checks))


def main() -> None:
    """Console-script entry point: every error, Typer's usage errors included, is one line and an exit code."""
    args = sys.argv[1:]
    if not args:  # plain `lenet`: the help, and exit code 2 (Click's for a command that needs arguments)
        app(["--help"], prog_name="lenet", standalone_mode=False)
        sys.exit(2)
    try:
        code = app(args, standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (Exception, KeyboardInterrupt) as exc:
        sys.exit(exit_code_for(exc))
    sys.exit(code if isinstance(code, int) else 0)
