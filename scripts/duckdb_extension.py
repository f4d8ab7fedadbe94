#!/usr/bin/env python3
"""Make kvrec.duckdb_extension from the built shared library: a copy with DuckDB's extension
metadata footer appended (534 bytes: a WebAssembly custom-section header named
duckdb_signature, eight 32-byte fields written last to first, and a 256-byte signature left
zero: the extension is unsigned, so DuckDB loads it with allow_unsigned_extensions).

The ABI is C_STRUCT against C API v1.5.6, the version the entry point asks for
(src/duckdb/mod.rs): DuckDB 1.5.6 through 2.0.x load it. The library must already be stripped
(the release profile strips); stripping after this would cut the footer off.

    python3 scripts/duckdb_extension.py [--lib target/release/libkvrec.so] [--out DIR/kvrec.duckdb_extension]
"""
import argparse
import pathlib
import platform
import shutil
import sys

C_API_VERSION = "v1.5.6"
ABI = "C_STRUCT"
MAGIC = "4"


def field(text: str) -> bytes:
    data = text.encode("ascii")
    if len(data) > 32:
        sys.exit(f"metadata field too long: {text!r}")
    return data.ljust(32, b"\0")


def duckdb_platform() -> str:
    machine = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    system = {"Linux": "linux", "Darwin": "osx"}.get(platform.system())
    if not machine or not system:
        sys.exit(f"unsupported platform {platform.system()} {platform.machine()}; pass --platform")
    return f"{system}_{machine}"


def crate_version(root: pathlib.Path) -> str:
    for line in (root / "Cargo.toml").read_text().splitlines():
        if line.startswith("version = "):
            return "v" + line.split('"')[1]
    return "v0.0.0"


def write_extension(lib: pathlib.Path, out: pathlib.Path, version: str, platform_name: str = None) -> None:
    """Writes `lib` plus the footer to `out` (through a temporary file, so `out` is never
    half-written)."""
    fields = [
        "", "", "",  # fields 8..6: unused
        ABI,
        version,
        C_API_VERSION,
        platform_name or duckdb_platform(),
        MAGIC,
    ]
    footer = b"\x00\x93\x04\x10duckdb_signature\x80\x04"
    footer += b"".join(field(f) for f in fields) + b"\0" * 256
    assert len(footer) == 534
    tmp = out.with_suffix(".tmp")
    shutil.copyfile(lib, tmp)
    with open(tmp, "ab") as f:
        f.write(footer)
    tmp.replace(out)


def main() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", default=str(root / "target/release/libkvrec.so"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--platform", default=None)
    args = parser.parse_args()
    lib = pathlib.Path(args.lib)
    if not lib.is_file():
        sys.exit(f"{lib} does not exist: build it first with cargo build --release --workspace")
    out = pathlib.Path(args.out) if args.out else lib.parent / "kvrec.duckdb_extension"
    write_extension(lib, out, crate_version(root), args.platform)
    print(out)


if __name__ == "__main__":
    main()
