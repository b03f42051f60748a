"""The `topoctl` command's entry point (also `python -m topoctl`): quiet about signals from the
first line on, then the CLI."""

import os
import signal


def _stopped(signum: int, frame) -> None:
    # Nothing has been changed this early (importing, parsing): end at once, as a command
    # stopped by this signal, without a traceback; a second signal is held back meanwhile.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    name = "interrupted" if signum == signal.SIGINT else "terminated"
    try:
        os.write(2, f"{name}\n".encode())
    finally:
        os._exit(128 + signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # a signal ignored by the caller stays so
            signal.signal(signum, _stopped)
    from topoctl.cli import main as run

    run()


if __name__ == "__main__":
    main()
