"""``resnetctl ARGS`` as the benchmarks run it: a real subprocess, its JSON read back."""

from __future__ import annotations

import json
import subprocess
import sys


def cli(*args) -> dict:
    """Run ``python -m resnetctl ARGS``; stop the benchmark with its stderr if it fails; the parsed
    stdout when ``--json`` is among the arguments, else ``{}``."""
    proc = subprocess.run([sys.executable, "-m", "resnetctl", *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"resnetctl {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return json.loads(proc.stdout) if "--json" in args else {}
