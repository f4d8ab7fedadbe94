"""The `kvrec` command: kvrec-finetune as the wheel ships it (`kvrec fit recipe.toml --out fit`,
`kvrec eval …`, `kvrec --help`), so that pip install gives training as well as serving."""
import os
import pathlib
import stat
import sys

BINARY = pathlib.Path(__file__).resolve().parent / "bin" / "kvrec-finetune"


def main() -> None:
    if not BINARY.is_file():
        sys.exit(f"kvrec: {BINARY} is missing from this installation; reinstall the kvrec wheel")
    mode = BINARY.stat().st_mode
    if not mode & stat.S_IXUSR:
        # An installer that dropped the executable bit: restore it where we may.
        try:
            BINARY.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as error:
            sys.exit(f"kvrec: {BINARY} is not executable ({error}); chmod +x it")
    os.execv(str(BINARY), ["kvrec"] + sys.argv[1:])


if __name__ == "__main__":
    main()
