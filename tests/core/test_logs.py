import json
import logging

from services.core.logs import JsonFormatter


def test_a_record_stays_one_line_whatever_a_client_sent():
    # A request path or file name from a client, with characters readers take for line ends.
    sent = "GET /upload/\u2028x\x85y\x1cz\u2029\nw é"
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "%s", (sent,), None)

    line = JsonFormatter().format(record)

    assert len(line.splitlines()) == 1
    assert json.loads(line)["message"] == sent
