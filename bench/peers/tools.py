"""The peer tools, installed when missing, and a description of the machine they run on.

Debian's packages (nginx-light, aria2, unzip, curl) come from apt; img2dataset comes from PyPI
into its own venv under bench/out/ (never into the project's .venv, whose pins it would fight).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from bench.peers.timing import meminfo_kib

APT = {"nginx": "nginx-light", "aria2c": "aria2", "unzip": "unzip", "curl": "curl", "taskset": "util-linux"}
IMG2DATASET = "img2dataset==1.47.0"


def ensure_debian(tools: list[str]) -> None:
    missing = [t for t in tools if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if not missing:
        return
    pkgs = sorted({APT[t] for t in missing})
    print(f"installing {' '.join(pkgs)} from Debian", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def ensure_img2dataset(venv: Path) -> Path:
    """The img2dataset command of its own venv (created and installed on first use)."""
    exe = venv / "bin" / "img2dataset"
    if exe.exists():
        return exe
    print(f"installing {IMG2DATASET} into {venv}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", IMG2DATASET], check=True)
    return exe


def _first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0] if out else "?"


def machine(repo: Path, out: Path) -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kb = meminfo_kib("MemTotal")
    mem = "?" if kb is None else f"{kb / (1 << 20):.0f} GiB"
    disk = _first_line(["sh", "-c", f"df -hT {out} | tail -1"])
    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": mem,
        "disk (bench/out)": disk,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "vlmdata commit": _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]),
        "nginx": _first_line([nginx_binary(), "-v"]),
        "curl": _first_line(["curl", "--version"]),
        "aria2c": _first_line(["aria2c", "--version"]),
        "unzip": _first_line(["unzip", "-v"]),
    }
