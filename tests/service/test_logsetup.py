"""Log lines: logfmt and JSON, one line per event."""

from __future__ import annotations

import io
import json
import logging

import pytest

from exporter.service.logsetup import setup_logging


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logfmt_quotes_and_kv(restore_root):
    buf = io.StringIO()
    setup_logging("info", "logfmt", buf)
    logging.getLogger("exporter.x").warning('bad "thing" here', extra={"kv": {"file": "/a b", "n": 3}})
    logging.getLogger("exporter.x").debug("hidden")
    line = buf.getvalue()
    assert line.count("\n") == 1
    assert " level=warn caller=exporter.x msg=\"bad \\\"thing\\\" here\" file=\"/a b\" n=3\n" in line
    assert line.startswith("ts=") and line[3:27].endswith("Z")


def test_json_lines(restore_root):
    buf = io.StringIO()
    setup_logging("debug", "json", buf)
    try:
        raise OSError("disk on fire")
    except OSError:
        logging.getLogger("exporter.y").error("oops", exc_info=True, extra={"kv": {"target": "web"}})
    rec = json.loads(buf.getvalue())
    assert rec["level"] == "error" and rec["msg"] == "oops" and rec["target"] == "web"
    assert rec["err"] == "OSError: disk on fire"
    assert "Traceback" not in buf.getvalue()


def test_bad_level_or_format():
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging("loud", "logfmt")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        setup_logging("info", "xml")
