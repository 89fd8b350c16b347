"""The project's exceptions. Core modules raise these; the CLI turns them into one line and an exit code.

Exit codes (documented in the README):
    0  success
    1  a failure the user can fix (missing file, bad weights, no device, ...)
    2  a usage error (bad option value); Typer uses 2 for its own usage errors too
    3  `lenet predict --min-confidence`: every image was classified, but some not surely enough
    130 interrupted by Ctrl-C
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNSURE = 3
EXIT_INTERRUPTED = 130


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (for one-line errors), or its type when it has none."""
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:limit]


class LenetError(Exception):
    """Base class: a message that says what went wrong and, optionally, what to do next."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class UsageError(LenetError):
    """An option value that cannot work (a bad device string, a split larger than the data)."""

    exit_code = EXIT_USAGE


class DeviceError(LenetError):
    """The requested device does not exist on this machine."""


class DataError(LenetError):
    """MNIST is missing, corrupt or fails its checksum."""


class WeightsError(LenetError):
    """A weights file is missing, corrupt or does not match the model."""


class ImageError(LenetError):
    """An image file cannot be read or holds no digit.

    `kind` names the failure for scripts (`lenet predict --json` reports it per file):
    not_found, unreadable, empty, not_image, corrupt, too_large, no_ink, not_a_file (a named pipe,
    socket or device: never opened, so it cannot block); for URLs also http_error (a status other
    than 404/410, which are not_found), unreachable (refused, unknown host, dropped) and timeout.
    """

    def __init__(self, message: str, hint: str | None = None, kind: str = "corrupt") -> None:
        super().__init__(message, hint)
        self.kind = kind


# What to do about a file that failed, by its error_kind (the CLI's summary line ends with it).
IMAGE_HINTS = {
    "not_found": "Check the path; a quoted pattern must match existing files.",
    "unreadable": "Check the file's permissions.",
    "empty": "Save or download the image again.",
    "not_image": "Pass PNG, JPEG, BMP, GIF, TIFF or WebP images.",
    "corrupt": "Save or download the image again.",
    "too_large": "Scale it down below 50 megapixels (20 MiB for a URL or stdin).",
    "no_ink": "Pass an image with a visible digit on a plain background.",
    "not_a_file": "Pass image files; named pipes, sockets and devices are not read.",
    "http_error": "Check the URL in a browser.",
    "unreachable": "Check the URL and the network.",
    "timeout": "Try again, or download the image and pass the file.",
}


class UnsureError(LenetError):
    """`lenet predict --min-confidence`: some prediction was below it, or its image was not a digit."""

    exit_code = EXIT_UNSURE


class DivergedError(LenetError):
    """Training produced a loss that is NaN or infinite: the run stops there, and saves nothing of it."""

    def __init__(self, message: str, hint: str | None = None, epoch: int = 0, step: int = 0) -> None:
        super().__init__(message, hint)
        self.epoch, self.step = epoch, step


class ExportError(LenetError):
    """ONNX export or its verification failed."""


class DistributedError(LenetError):
    """A process of a torchrun launch lost the others (one failed, was stopped, or hung past the timeout)."""


class OutputError(LenetError):
    """A file or directory could not be written."""


class ServeError(LenetError):
    """`lenet serve` cannot listen on the address asked for (port in use, no such interface, ...)."""


class BenchError(LenetError):
    """A measurement of `lenet bench` failed in its own process (an error, a crash or a timeout)."""
