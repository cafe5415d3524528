"""Imported at start-up by Python processes that have this folder on PYTHONPATH: the console tests' engine.

With EXPUNGE_TEST_TODAY set (an ISO date-time, UTC), the service clock starts at that moment and runs at the real
rate, so the received and due dates and the days left that the screens show are the same on any day."""

import os

if os.environ.get("EXPUNGE_TEST_TODAY"):
    import time
    from datetime import UTC, datetime, timedelta

    import engine.control.service.clock as service_clock

    _start_at = datetime.fromisoformat(os.environ["EXPUNGE_TEST_TODAY"]).replace(tzinfo=UTC)
    _started = time.monotonic()
    service_clock.now = lambda: _start_at + timedelta(seconds=time.monotonic() - _started)
