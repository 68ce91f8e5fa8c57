"""The replica's log lines from Python: Ray's `ray.serve` logger (and `print`) with the
replica's names and the request id, as TEXT or JSON (`logging_config.encoding`), on stderr,
which the Rust replica sends where its own log goes."""

import json
import logging
import sys
import time

logger = logging.getLogger("ray.serve")


class _ReplicaFormatter(logging.Formatter):
    def __init__(self, spec, as_json):
        super().__init__()
        self.names = (spec["app"], spec["deployment"], spec["replica_id"])
        self.as_json = as_json

    def format(self, record):
        from ray.serve import context

        request_id = context._get_request().request_id
        app, deployment, replica = self.names
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if self.as_json:
            return json.dumps(
                {
                    "asctime": self.formatTime(record),
                    "levelname": record.levelname,
                    "message": message,
                    "filename": record.filename,
                    "lineno": record.lineno,
                    "application": app,
                    "deployment": deployment,
                    "replica": replica,
                    "request_id": request_id,
                }
            )
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)) + f",{int(record.msecs):03d}"
        return f"{record.levelname} {stamp} {app}_{deployment} {replica} {request_id} {record.filename}:{record.lineno} - {message}"


class _PrintToLog:
    """`print` in user code: each line becomes an INFO line of the `ray.serve` logger."""

    def __init__(self, stream):
        self.stream = stream
        self.pending = ""

    def write(self, text):
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            logger.info("%s", line, stacklevel=2)
        return len(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def fileno(self):
        return self.stream.fileno()


def setup(spec):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ReplicaFormatter(spec, (spec.get("log_encoding") or "TEXT") == "JSON"))
    logger.addHandler(handler)
    logger.propagate = False
    level = spec.get("log_level") or "INFO"
    logger.setLevel(int(level) if str(level).isdigit() else str(level).upper())
    sys.stdout = _PrintToLog(sys.stdout)
