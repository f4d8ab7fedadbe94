#!/usr/bin/env python3
"""Builds kvrec's Python wheels from a built extension, with no build tool but Python:

  kvrec-<v>-py3-none-linux_<arch>.whl   libkvrec.so, kvrec.duckdb_extension, the default model,
                                         and kvrec-finetune as the `kvrec` command (kvrec fit …)
  datasette_kvrec-<v>-py3-none-any.whl   the Datasette plugin (needs kvrec, datasette)
  sqlite_utils_kvrec-<v>-py3-none-any.whl the sqlite-utils plugin (needs kvrec, sqlite-utils)

The platform tag comes from the library itself (its ELF header), not from the machine the
script runs on, so a library built for another architecture can never ship under this one's
tag. Each wheel is written to a temporary name and renamed when complete.

    python3 scripts/build_wheels.py [--lib target/release/libkvrec.so] [--bin <lib's folder>/kvrec-finetune]
                                    [--model models/kvrec-default.gguf] [--out dist]
"""
import argparse
import base64
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import duckdb_extension  # noqa: E402

# ELF e_machine values and the platform tag's architecture for each.
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x03: "i686", 0x28: "armv7l"}


def elf_arch(lib: pathlib.Path) -> str:
    """The architecture `lib` was built for, from its ELF header."""
    head = lib.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        sys.exit(f"{lib} is not an ELF shared library")
    bits = {1: 32, 2: 64}[head[4]]
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    arch = ELF_MACHINES.get(machine)
    if arch is None:
        sys.exit(f"{lib}: unknown ELF machine {machine:#x}")
    if (arch in ("x86_64", "aarch64")) != (bits == 64):
        sys.exit(f"{lib}: a {bits}-bit library cannot be {arch}")
    return arch


def crate_version() -> str:
    return duckdb_extension.crate_version(ROOT).lstrip("v")


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(out_dir, dist, version, tag, files, requires=(), entry_points=None, summary=""):
    """`files`: {path in the wheel: bytes or a pathlib.Path}. Returns the wheel's path."""
    pure = tag.endswith("-any")
    name = f"{dist}-{version}-{tag}.whl"
    info = f"{dist}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {dist.replace('_', '-')}",
        f"Version: {version}",
        f"Summary: {summary}",
        "License: MIT OR Apache-2.0",
        "Requires-Python: >=3.8",
    ] + [f"Requires-Dist: {r}" for r in requires]
    meta_files = {
        f"{info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: kvrec scripts/build_wheels.py\n"
            f"Root-Is-Purelib: {'true' if pure else 'false'}\nTag: {tag}\n"
        ).encode(),
    }
    if entry_points:
        meta_files[f"{info}/entry_points.txt"] = entry_points.encode()
    out = pathlib.Path(out_dir) / name
    tmp = out.with_suffix(".tmp")
    records = []
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, content in list(files.items()) + list(meta_files.items()):
            data = content.read_bytes() if isinstance(content, pathlib.Path) else content
            info_ = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info_.compress_type = zipfile.ZIP_DEFLATED
            # pip keeps the executable bit of a file whose mode in the wheel has it.
            executable = arcname in EXECUTABLES
            info_.external_attr = (0o100755 if executable else 0o100644) << 16
            z.writestr(info_, data)
            records.append(record_line(arcname, data))
        records.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    tmp.replace(out)
    return out


# Files of a wheel installed executable.
EXECUTABLES = {"kvrec/bin/kvrec-finetune"}


def package_files(package: str) -> dict:
    src = ROOT / "python" / package
    return {f"{package}/{p.name}": p for p in sorted(src.glob("*.py"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", default=str(ROOT / "target/release/libkvrec.so"))
    parser.add_argument("--bin", help="kvrec-finetune (default: beside --lib)")
    parser.add_argument("--model", default=str(ROOT / "models/kvrec-default.gguf"))
    parser.add_argument("--out", default=str(ROOT / "dist"))
    parser.add_argument("--strip", action="store_true",
                        help="strip debug information from copies of the library and binary first")
    args = parser.parse_args()
    lib = pathlib.Path(args.lib)
    if not lib.is_file():
        sys.exit(f"{lib} does not exist: build it first with cargo build --release --workspace")
    binary = pathlib.Path(args.bin) if args.bin else lib.parent / "kvrec-finetune"
    if not binary.is_file():
        sys.exit(f"{binary} does not exist: build it with cargo build --release --workspace")
    model = pathlib.Path(args.model)
    if not model.is_file():
        sys.exit(f"{model} does not exist")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    version = crate_version()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if args.strip:
            stripped = tmp / "libkvrec.so"
            shutil.copyfile(lib, stripped)
            subprocess.run(["strip", "--strip-debug", str(stripped)], check=True)
            lib = stripped
            stripped_bin = tmp / "kvrec-finetune"
            shutil.copyfile(binary, stripped_bin)
            subprocess.run(["strip", "--strip-debug", str(stripped_bin)], check=True)
            binary = stripped_bin
        arch = elf_arch(lib)
        duck = tmp / "kvrec.duckdb_extension"
        duckdb_extension.write_extension(lib, duck, "v" + version)
        files = package_files("kvrec")
        files.update({
            "kvrec/libkvrec.so": lib,
            "kvrec/kvrec.duckdb_extension": duck,
            "kvrec/models/kvrec-default.gguf": model,
            "kvrec/bin/kvrec-finetune": binary,
        })
        wheels = [
            write_wheel(out, "kvrec", version, f"py3-none-linux_{arch}", files,
                        entry_points="[console_scripts]\nkvrec = kvrec.cli:main\n",
                        summary="LLM-based recommendation inside SQLite and DuckDB"),
        ]
    wheels.append(write_wheel(
        out, "datasette_kvrec", version, "py3-none-any", package_files("datasette_kvrec"),
        requires=[f"kvrec=={version}", "datasette"],
        entry_points="[datasette]\nkvrec = datasette_kvrec\n",
        summary="recommend() in Datasette, with the model registry locked"))
    wheels.append(write_wheel(
        out, "sqlite_utils_kvrec", version, "py3-none-any", package_files("sqlite_utils_kvrec"),
        requires=[f"kvrec=={version}", "sqlite-utils"],
        entry_points="[sqlite_utils]\nkvrec = sqlite_utils_kvrec\n",
        summary="the kvrec extension in every sqlite-utils connection"))
    for wheel in wheels:
        print(wheel)


if __name__ == "__main__":
    main()
