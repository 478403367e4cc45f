"""Delivery edge cases against the real engine: huge lines, bad bytes, redaction, multiline.

Each audit reads the output of a stopped daemon (SIGTERM drains; exit 0 checked)."""

from __future__ import annotations

from collections.abc import Callable

from log_capturer_testkit import Daemon, Fleet, assert_exactly_once, by_stream


def test_a_10_mib_line_is_truncated_and_marked_and_the_next_lines_flow(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()  # max_line_bytes: 1MiB (the default)
    name = f"huge-{daemon.run_id}"
    script = "echo before; head -c 10485760 /dev/zero | tr '\\0' z; echo; seq 1 100"
    containers.wait_exit(containers.run(script, name=name), timeout=120)
    daemon.wait_captured(102)
    truncated = daemon.metric("log_capturer_lines_truncated_total")
    records = daemon.stop_and_read()
    messages = by_stream(records)[(name, "stdout")]
    assert messages == ["before", "z" * 1048576, *[str(i) for i in range(1, 101)]]
    assert [r.get("truncated", False) for r in records][:3] == [False, True, False]
    assert truncated == 1


def test_invalid_utf8_is_replaced_never_a_crash(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()
    name = f"bytes-{daemon.run_id}"
    script = "printf 'ok\\n\\377\\376 broken \\300\\n\\303\\251t\\303\\251\\n'; echo after"
    containers.wait_exit(containers.run(script, name=name))
    daemon.wait_captured(4)
    assert_exactly_once(
        daemon.stop_and_read(), name, "stdout", ["ok", "\ufffd\ufffd broken \ufffd", "été", "after"]
    )


def test_redaction_and_multiline_apply_before_the_sink(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon(
        {
            "pipeline": {
                "stages": {
                    "multiline": {"enabled": True, "flush_timeout": "500ms"},
                    "redact": {
                        "enabled": True,
                        "rules": [{"name": "card", "pattern": r"\b\d{4}-\d{4}-\d{4}-\d{4}\b"}],
                    },
                }
            }
        }
    ).start()
    name = f"secret-{daemon.run_id}"
    script = (
        "echo 'login user=bob password=hunter2 ok'; "
        "echo 'paid with 4111-1111-1111-1111'; "
        "echo 'ERROR request failed'; "
        "echo 'Traceback (most recent call last):'; "
        "echo '  File \"app.py\", line 3, in <module>'; "
        "echo 'ValueError: boom'; "
        "echo 'next request'"
    )
    containers.wait_exit(containers.run(script, name=name))
    daemon.wait_captured(4)
    records = daemon.stop_and_read()
    text = "\n".join(r["message"] for r in records)
    assert "hunter2" not in text and "4111-1111-1111-1111" not in text
    messages = by_stream(records)[(name, "stdout")]
    assert messages[0].startswith("login user=bob password=") and "[REDACTED]" in messages[0]
    assert messages[1] == "paid with [REDACTED]"
    assert messages[2] == (
        "ERROR request failed\nTraceback (most recent call last):\n"
        '  File "app.py", line 3, in <module>\nValueError: boom'
    )
    assert records[2]["lines"] == 4
    assert messages[3] == "next request"
    assert len(records) == 4
