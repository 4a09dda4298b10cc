"""What every benchmark script prints and records: the machine, the versions, its docs section.

Benchmarks print tables with the machine and versions they ran on, and ``--write-docs`` replaces
their own ``## …`` section of docs/benchmarks.md, leaving the others as they are.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def shared_data(kind: str | None = None) -> Path:
    """The real market files (``AURUM_DATA_DIR``, default ``../shared/data`` beside the checkout), or
    their ``kind`` subfolder (``epf``, ``entsoe``)."""
    root = Path(os.environ.get("AURUM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return root / kind if kind else root


def require_shared_data(kind: str, what: str) -> Path:
    """The folder of ``kind`` files (:func:`shared_data`); exits naming the folder when it is missing."""
    folder = shared_data(kind)
    if not folder.is_dir():
        sys.exit(f"the {what} files are not in {folder}; set AURUM_DATA_DIR")
    return folder.parent


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": str(cores), "ram": ram, "os": f"{platform.system()} {platform.release()}"}


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def header_lines(packages: tuple[str, ...]) -> list[str]:
    m, v = machine(), versions(packages)
    return [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, {m['os']}",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]


def write_docs(section: str, block: list[str]) -> None:
    """Replace (or append) the ``section`` heading and its block in docs/benchmarks.md."""
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    new = [section, "", *block]
    if section in lines:
        start = lines.index(section)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        lines = lines[:start] + new + ([""] + tail if tail else [])
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *new]
    DOCS.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


def command_line(script: str, argv: list[str] | None) -> str:
    """How the benchmark was invoked (without ``--write-docs``), for the report."""
    args = argv if argv is not None else sys.argv[1:]
    return f"python benchmarks/{script} {' '.join(a for a in args if a != '--write-docs')}".strip()


def record(section: str, command: str, shape: str, head: list[str], table: list[str], notes: list[str]) -> None:
    """Write one run into its docs section: when and how it ran, the machine and versions, the result."""
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"Run {when}: `{command}` ({shape}).", "", *(f"{h}  " for h in head[:-1]), head[-1], "",
             *table, "", *notes]
    write_docs(section, block)
    print(f"\nwritten to {DOCS}")
