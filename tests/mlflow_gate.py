"""A real MLflow tracking server (MLflow's own Flask app on a sqlite store) whose answers a test
can hold back: while the file GATE exists, every request waits until it is removed, as a
server that stopped answering does. ``python -m tests.mlflow_gate PORT DB ARTIFACTS GATE``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(port: int, database: Path, artifacts: Path, gate: Path) -> None:
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = f"sqlite:///{database}"  # what `mlflow server` sets for its app
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = str(artifacts)
    from mlflow.server import app
    from werkzeug.serving import make_server

    def held(environ, start_response):
        while gate.exists():
            time.sleep(0.05)
        return app(environ, start_response)

    server = make_server("127.0.0.1", port, held, threaded=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
