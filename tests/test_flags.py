"""Every ``tickerd serve`` flag and its TICKERD_* variable, with bad values, through the real
process: one line naming the flag (and the variable it came from), what was given and what
is allowed, exit status 2, no traceback; the ``--help`` text and the README agree.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tickerd.cli import build_parser, main, settings_from
from tickerd.config import GROUPS, Settings, default_text, env_of, flag_of, setting_rules
from tickerd.validation import KINDS, SettingError, allowed_text, resolve

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).parents[1]
MISSING = "/nonexistent/tickerd-test/x"

#: setting -> [(bad text, a fragment of what the message says is allowed)].
BAD: dict[str, list[tuple[str, str]]] = {
    "host": [("127.0.0.1:9000", "give the port with its own flag"), ("bad host!", "host name"),
             ("", "IP address"), ("999.1.1.1", "IP address")],
    "port": [("70000", "from 0 to 65535 (0: any free port)"), ("-5", "from 0 to 65535"),
             ("abc", "an integer"), ("\u0661\u0662", "an integer"), ("9000.0", "an integer"),
             (" 9000", "an integer")],
    "path": [("noslash", "starting with /"), ("/has space", "no spaces"),
             ("/healthz", "served by tickerd itself"), ("/a?b", "no spaces, ? or #")],
    "rest_port": [("70001", "from -1 to 65535 (0: any free port, -1: no REST API)"),
                  ("-7", "from -1 to 65535")],
    "symbols_file": [(MISSING, "no such file"), ("/", "not a file")],
    "log_level": [("LOUD", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"), ("", "one of")],
    "feed": [("synthetic,,", "no empty item"), ("nope", "'nope' is not one of synthetic"),
             ("synthetic,synthetic", "given twice"), ("", "no empty item")],
    "seed": [("-1", "from 0 to"), ("1.5", "an integer")],
    "tick_rate": [("-5", "from 0 to 100000 ticks/s (0: prices stand still)"),
                  ("nan", "a number"), ("inf", "a number"), ("1e3", "a number"),
                  ("100001", "to 100000")],
    "replay_path": [(MISSING, "no such file or folder"), ("a,,b", "no empty item")],
    "replay_speed": [("0", "from 0.001 to 1000000 or one of max, step"), ("-1", "from 0.001"),
                     ("fast", "or one of max, step"), ("nan", "a number")],
    "mirror_rest_url": [("ftp://x", "http:// or https:// URL"), ("http://", "with a host"),
                        ("http://h:99999", "Port out of range"), ("https://[::1", "Invalid IPv6")],
    "mirror_stream_url": [("http://x", "ws:// or wss:// URL"), ("ws://h:abc", "cast to integer"),
                          ("ws://h:0/market", "port 0")],
    "replay_progress_every": [("0", "from 0.1 to 86400 s"), ("nan", "a number")],
    "mirror_symbols": [("BTC USDT", "not a symbol name"), ("BTCUSDT,,ETHUSDT", "no empty item")],
    "mirror_stale_after": [("0", "from 1 to 86400 s"), ("86401", "to 86400")],
    "mirror_rollover_after": [("59", "from 60 to 86400 s"), ("90000", "to 86400")],
    "mirror_idle_timeout": [("0.5", "from 1 to 86400 s"), ("-1", "from 1")],
    "mirror_universe_every": [("-1", "from 0 to 604800 s"), ("604801", "to 604800")],
    "mirror_proxy": [("socks5://h:1080", "http:// or https:// URL with a host, or none"),
                     ("http://", "with a host")],
    "record": [(MISSING + "/deeper", "no such folder"), ("/etc/passwd", "a file, not a folder")],
    "push_host": [("bad host", "host name")],
    "push_port": [("65536", "from 0 to 65535"), ("-1", "from 0 to 65535")],
    "push_token": [("has space", "RFC 6750"), ("x" * 1025, "at most 1024")],
    "push_symbols": [("bad-symbol", "not a symbol name")],
    "store": [(MISSING + "/p.db", "no such folder"), ("/", "a folder, not a file")],
    "store_flush_interval": [("0", "from 0.01 to 86400 s"), ("-1", "from 0.01"),
                             ("86401", "to 86400")],
    "weight_limit": [("0", "from 1 to"), ("-3", "from 1 to"), ("1.5", "an integer")],
    "connect_limit": [("-1", "from 0 to 1000000000 per 5 min (0: no limit)")],
    "max_connections": [("0", "from 1 to 10000000"), ("-1", "from 1")],
    "max_message_bytes": [("0", "from 1024 to 67108864 bytes"), ("1023", "from 1024"),
                          ("67108865", "to 67108864")],
    "max_send_buffer_bytes": [("0", "from 65536 to"), ("65535", "from 65536")],
    "ping_interval": [("0", "from 0.2 to 86400 s"), ("0.1", "from 0.2"), ("-1", "from 0.2"),
                      ("nan", "a number")],
    "pong_timeout": [("0", "from 0.2 to 86400 s"), ("86401", "to 86400")],
    "max_lifetime": [("0", "from 1 to 2592000 s"), ("0.5", "from 1")],
    "handshake_timeout": [("0", "from 0.1 to 3600 s"), ("3601", "to 3600")],
    "close_timeout": [("0", "from 0.1 to 3600 s"), ("-1", "from 0.1")],
    "streams": [("yes", "one of on, off"), ("", "one of on, off")],
    "stream_port": [("70000", "from -1 to 65535 (0: any free port, -1: on the WebSocket API port)"),
                    ("-2", "from -1 to 65535"), ("abc", "an integer")],
    "stream_max_streams": [("0", "from 1 to 65536"), ("65537", "to 65536"), ("1.5", "an integer")],
    "stream_messages_per_s": [("0", "from 1 to 100000 per s"), ("100001", "to 100000"),
                              ("-1", "from 1")],
    "stream_ping_interval": [("0", "from 0.2 to 86400 s"), ("0.1", "from 0.2"),
                             ("nan", "a number")],
    "stream_pong_timeout": [("0", "from 0.2 to 86400 s"), ("86401", "to 86400")],
    "stream_max_lifetime": [("0", "from 1 to 2592000 s"), ("2592001", "to 2592000")],
    "stats_start": [("now", "one of first-use, startup"), ("", "one of first-use, startup")],
    "kline_history": [("0", "from 1 to 100000 candles"), ("100001", "to 100000"),
                      ("1.5", "an integer")],
    "control_host": [("bad host", "host name")],
    "control_port": [("-2", "from -1 to 65535 (0: any free port, -1: off)"), ("65536", "to 65535")],
    "control_token": [("bad token", "RFC 6750"), ("tok\u00e9n", "RFC 6750")],
    "scenario": [(MISSING, "no such file")],
    "max_total_send_buffer_bytes": [("0", "from 1048576 to 1099511627776 bytes"),
                                    ("1048575", "from 1048576")],
    "http_idle_timeout": [("0", "from 0.1 to 3600 s"), ("nan", "a number")],
    "http_max_connections": [("0", "from 1 to 10000000"), ("-1", "from 1")],
    "http_max_connections_per_ip": [("0", "from 1 to 10000000")],
    "tls_cert": [(MISSING, "no such file"), ("/", "not a file")],
    "tls_key": [(MISSING, "no such file")],
    "log_format": [("xml", "one of text, json"), ("", "one of")],
    "ops_host": [("bad host", "host name")],
    "ops_port": [("-2", "from -1 to 65535 (0: any free port, -1: off)"), ("65536", "to 65535")],
    "workers": [("0", "from 1 to 1024 or auto"), ("1025", "to 1024"), ("2.5", "an integer"),
                ("many", "or auto"), ("", "an integer")],
    "redis": [("nonsense", "redis:// or rediss:// URL with a host, or unix://"),
              ("http://h:6379", "redis:// or rediss://"), ("redis://", "with a host"),
              ("redis://h:99999/0", "Port out of range"), ("unix://sock", "a socket path"),
              ("redis://h:0/0", "port 0")],
    "redis_prefix": [("has space", "no spaces"), ("tickerd:*", "no * ? [ ]"),
                     ("", "1 to 64"), ("x" * 65, "1 to 64")],
    "feed_lease_ms": [("0", "from 300 to 600000 ms"), ("299", "from 300"), ("600001", "to 600000"),
                      ("1.5", "an integer")],
    "trusted_proxy": [("10.0.0.0/8,banana", "'banana' is not an IP address or CIDR"),
                      ("10.0.0.0/8,,::1", "no empty item"), ("10.0.0.0/33", "not an IP address")],
}  # fmt: skip

#: setting -> good texts and the value each gives.
GOOD: dict[str, list[tuple[str, Any]]] = {
    "host": [("0.0.0.0", "0.0.0.0"), ("::1", "::1"), ("localhost", "localhost")],
    "port": [("0", 0), ("65535", 65535)],
    "path": [("/ws", "/ws"), ("/a/b-c_d.e~f", "/a/b-c_d.e~f")],
    "rest_port": [("-1", -1), ("0", 0)],
    "log_level": [("debug", "DEBUG"), ("Warning", "WARNING")],
    "feed": [("synthetic, push", "synthetic,push"), ("REPLAY", "replay")],
    "tick_rate": [("0", 0.0), ("2.5", 2.5), (".5", 0.5)],
    "replay_speed": [("MAX", "max"), ("60", "60"), ("0.5", "0.5")],
    "store_flush_interval": [("0.01", 0.01), ("3600", 3600.0)],
    "weight_limit": [("1", 1), ("1000000000", 1_000_000_000)],
    "ping_interval": [("0.2", 0.2)],
    "max_lifetime": [("1", 1.0)],
    "streams": [("OFF", "off"), ("on", "on")],
    "stream_port": [("-1", -1), ("0", 0), ("9005", 9005)],
    "stream_max_streams": [("1", 1), ("65536", 65536)],
    "stream_messages_per_s": [("1", 1), ("100000", 100_000)],
    "stream_max_lifetime": [("1", 1.0), ("2592000", 2_592_000.0)],
    "stats_start": [("STARTUP", "startup"), ("first-use", "first-use")],
    "kline_history": [("1", 1), ("100000", 100_000)],
    "mirror_rest_url": [("http://127.0.0.1:8080", "http://127.0.0.1:8080")],
    "mirror_stream_url": [("ws://[::1]:9/market", "ws://[::1]:9/market")],
    "control_token": [("s3cret-._~+/==", "s3cret-._~+/==")],
    "workers": [("AUTO", "auto"), ("1024", "1024"), ("02", "2")],
    "redis": [
        ("redis://10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
        ("rediss://[::1]:6380", "rediss://[::1]:6380"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
    "redis_prefix": [("app:{tickerd}/", "app:{tickerd}/")],
    "feed_lease_ms": [("300", 300), ("600000", 600_000)],
    "trusted_proxy": [
        ("10.0.1.0/24, 192.168.1.1", "10.0.1.0/24,192.168.1.1"),
        ("::1,fd00::/8", "::1,fd00::/8"),
    ],
}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKERD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(env),
        stdin=subprocess.DEVNULL,
    )


def test_every_setting_has_rules_and_bad_values() -> None:
    declared = {f.name: f.metadata for f in dataclasses.fields(Settings)}
    for name, rules in setting_rules().items():
        assert declared[name].get("group") in GROUPS, f"{name}: no group (use config.setting)"
        assert declared[name].get("kind") in KINDS, f"{name}: no kind (use config.setting)"
        assert rules.get("help"), name
        if rules["kind"] in ("int", "float", "speed", "count"):
            assert rules["min"] <= rules["max"], name
        assert BAD.get(name), f"{name}: no bad values in the table"
    assert set(BAD) == set(setting_rules())


def test_defaults_and_good_values_are_accepted() -> None:
    assert resolve({}, {}).settings == Settings()
    for name, cases in GOOD.items():
        for text, value in cases:
            flags = {"feed": "synthetic,replay,mirror,push", "store": "p.db", "control_port": "0",
                     "redis": "redis://127.0.0.1:6379/0"}  # fmt: skip
            got = resolve({**flags, name: text}, {}).settings
            assert getattr(got, name) == value, (name, text)  # fmt: skip


def _problems(name: str, text: str, allowed: str, from_env: bool, rc: Any, err: str) -> str | None:
    """What is wrong with the answer to one bad value (None: nothing)."""
    flag, var = flag_of(name), env_of(name)
    lines = err.splitlines()
    problems = []
    if rc != 2:
        problems.append(f"exit {rc}")
    if len(lines) != 1 or not lines[0].startswith("tickerd serve: "):
        problems.append("not one line")
    line = lines[0] if lines else ""
    named = f"{var}={text!r} (for {flag})" if from_env else f"{flag} {text!r}"
    if setting_rules()[name].get("secret"):
        named = f"{var} (for {flag})" if from_env else f"{flag}:"
        if text in err:
            problems.append("a secret echoed")
    if named not in line:
        problems.append(f"does not name {named!r}")
    if allowed not in line:
        problems.append(f"does not say {allowed!r}")
    if "Traceback" in err:
        problems.append("a traceback")
    if not problems:
        return None
    return f"{'env' if from_env else 'flag'} {name}={text!r}: {problems}: {err!r}"


def _in_a_process(name: str, text: str, allowed: str, from_env: bool) -> str | None:
    done = serve([], {env_of(name): text}) if from_env else serve([flag_of(name), text])
    if done.stdout:
        return f"{name}={text!r}: printed {done.stdout!r}"
    return _problems(name, text, allowed, from_env, done.returncode, done.stderr)


def _first_set(values: list[tuple[str, str]]) -> tuple[str, str]:
    # An empty variable leaves a setting without a default unset: take a non-empty value.
    return next((t, a) for t, a in values if t)


def test_every_setting_bad_as_a_flag_and_as_a_variable_in_the_real_process() -> None:
    """Each setting's first bad value, given both ways to a real ``tickerd serve``."""
    cases = [(n, *_first_set(v), env) for n, v in BAD.items() for env in (False, True)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(lambda c: _in_a_process(*c), cases) if f]
    assert not failures, "\n".join(failures)


def test_every_bad_value_through_main(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bad value of the table, both ways, through the command's entry point."""
    for key in list(os.environ):
        if key.startswith("TICKERD_"):
            monkeypatch.delenv(key)
    failures = []
    for name, values in BAD.items():
        for text, allowed in values:
            for from_env in (False, True):
                if from_env and not text:
                    continue
                with monkeypatch.context() as patch:
                    if from_env:
                        patch.setenv(env_of(name), text)
                    rc = main(["serve"] if from_env else ["serve", flag_of(name), text])
                out, err = capsys.readouterr()
                problem = _problems(name, text, allowed, from_env, rc, err)
                if problem or out:
                    failures.append(problem or f"{name}={text!r}: printed {out!r}")
    assert not failures, "\n".join(failures)


def test_a_flag_wins_over_its_variable_and_an_empty_variable_is_unset() -> None:
    env = {"TICKERD_PORT": "70000", "TICKERD_STORE": "", "TICKERD_TICK_RATE": "3"}
    args = build_parser(env).parse_args(["serve", "--port", "0"])
    settings = settings_from(args, env)
    assert (settings.port, settings.store, settings.tick_rate) == (0, None, 3.0)
    with pytest.raises(SettingError, match=r"^TICKERD_PORT='70000' \(for --port\): expected"):
        settings_from(build_parser(env).parse_args(["serve"]), env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay-path", str(ROOT / "tests")], "--replay-path means nothing without --feed with replay (--feed is 'synthetic')"),
        (["--replay-speed", "max"], "--replay-speed means nothing without --feed with replay"),
        (["--mirror-symbols", "BTCUSDT"], "--mirror-symbols means nothing without --feed with mirror"),
        (["--push-port", "0"], "--push-port means nothing without --feed with push"),
        (["--push-token", "t"], "--push-token means nothing without --feed with push"),
        (["--store-flush-interval", "5"], "--store-flush-interval means nothing without --store"),
        (["--control-token", "t"], "--control-token means nothing without --control-port"),
        (["--control-host", "0.0.0.0"], "--control-host means nothing without --control-port"),
        (["--redis-prefix", "app:"], "--redis-prefix means nothing without --redis"),
        (["--streams", "off", "--stream-port", "0"], "--stream-port means nothing without --streams on"),
    ],
)  # fmt: skip
def test_a_flag_without_what_it_needs_is_refused(args: list[str], message: str) -> None:
    done = serve(["--port", "0", "--rest-port", "-1", *args])
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"tickerd serve: {message}"), done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "9001"], "--rest-port 9001 is also --port on 127.0.0.1"),
        (["--feed", "push", "--push-token", "t", "--push-port", "9000"], "--push-port 9000 is also --port on 127.0.0.1"),
        (["--control-port", "9001", "--control-token", "t"], "--control-port 9001 is also --rest-port on 127.0.0.1"),
        (["--stream-port", "9000"], "--stream-port 9000 is also --port on 127.0.0.1"),
        (["--stream-port", "9001"], "--stream-port 9001 is also --rest-port on 127.0.0.1"),
    ],
)  # fmt: skip
def test_two_surfaces_on_one_port_are_refused(args: list[str], message: str) -> None:
    done = serve(args)
    assert (done.returncode, done.stderr) == (
        2, f"tickerd serve: {message}: each surface needs a port of its own\n"
    )  # fmt: skip
    # Other addresses, port 0 or a surface that is off do not clash.
    for fine in (
        {"port": "9001", "rest_port": "-1"},
        {"port": "0", "rest_port": "0", "control_port": "0", "control_token": "t"},
        {"control_port": "9001", "control_host": "::1", "control_token": "t"},
    ):
        resolve(fine, {})
    assert resolve({}, {"TICKERD_PUSH_PORT": "9000"}).warnings  # push is off: no clash


def test_a_variable_without_what_it_needs_is_a_warning_and_the_server_runs() -> None:
    env = child_env({"TICKERD_PUSH_TOKEN": "s3cret", "TICKERD_REPLAY_SPEED": "max"})
    process = subprocess.Popen(
        [sys.executable, "-m", "tickerd", "serve", "--port", "0", "--rest-port", "-1",
         "--ops-port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(2)]
        # Then the start-up summary, ending with the ready line.
        while "tickerd ready:" not in lines[-1] and lines[-1]:
            lines.append(process.stderr.readline())
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert lines[0] == (
        "tickerd serve: warning: TICKERD_REPLAY_SPEED is ignored: --replay-speed needs "
        "--feed with replay (--feed is 'synthetic')\n"
    )
    assert lines[1].startswith("tickerd serve: warning: TICKERD_PUSH_TOKEN is ignored")
    assert "s3cret" not in "".join(lines)
    assert "tickerd ready: ws://127.0.0.1:" in lines[-1]
    assert process.returncode == 0


def test_argparse_errors_are_one_line_too() -> None:
    done = serve(["--port"])
    assert (done.returncode, done.stderr) == (
        2,
        "tickerd serve: argument --port: expected one argument (see tickerd serve --help)\n",
    )
    done = serve(["--bogus", "1"])
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "unrecognized arguments: --bogus 1" in done.stderr


# -- --help and the README -------------------------------------------------------------


def readme_flag_rows() -> dict[str, tuple[str, ...]]:
    """The README's flag tables: flag -> (group heading, default, units, allowed, meaning)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Flags\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, ...]] = {}
    group = ""
    for line in section.splitlines():
        if line.startswith("### "):
            group = line[4:].strip()
        m = re.fullmatch(r"\| `(--[a-z-]+)` \|(.*?)\|(.*?)\|(.*?)\|(.*)\|", line)
        if m:
            cells = (c.strip().replace("`", "") for c in m.groups()[1:])
            rows[m.group(1)] = (group, *cells)
    return rows


def test_help_groups_defaults_and_examples_match_the_readme() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", "serve", "--help"],
        check=True, capture_output=True, text=True, timeout=60, env=child_env(),
    )  # fmt: skip
    help_text = done.stdout
    rows = readme_flag_rows()
    assert set(rows) == {flag_of(n) for n in setting_rules()}
    for name, rules in setting_rules().items():
        flag = flag_of(name)
        group, default, units, allowed, _ = rows[flag]
        assert group == GROUPS[rules["group"]], flag
        assert default == default_text(name), flag
        assert units == rules.get("units", ""), flag
        assert allowed.removesuffix(" (any case)") == allowed_text(name), flag
        # In --help: under its group's heading, with the same default and its variable.
        section = help_text.split(f"\n{GROUPS[rules['group']]} flags:\n", 1)[1].split("\n\n")[0]
        entry = re.sub(r"\s+", " ", section.split(f"  {flag} ", 1)[1].split("\n  --", 1)[0])
        assert f"[default: {default_text(name)}; env {env_of(name)}]" in entry, flag
    assert "default: None" not in help_text
    assert "--symbols-file FILE" in help_text and "[default: bundled;" in help_text
    assert "required with --control-port" in help_text
    examples = [line.split("tickerd serve", 1)[1].split() for line in help_text.splitlines()
                if line.startswith("  ") and "tickerd serve" in line]  # fmt: skip
    assert len(examples) >= 3
    # Every example's flags are valid as printed (with a folder of trades that exists).
    for words in examples:
        if "--replay-path" in words:
            words[words.index("--replay-path") + 1] = str(ROOT / "tests" / "data" / "replay")
        settings_from(build_parser({}).parse_args(["serve", *words]), {})


# -- the client side: price and watch ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["price", "--url", "ws://127.0.0.1:abc/ws-fapi/v1"], {},
         ("argument --url: 'ws://127.0.0.1:abc/ws-fapi/v1': expected a ws:// or wss:// URL "
         "with a host (Port could not be cast to integer value as 'abc')")),
        (["price", "--url", "ws://127.0.0.1:99999/ws-fapi/v1"], {}, "(Port out of range 0-65535)"),
        (["price", "--url", "ws://[::1"], {}, "'ws://[::1': expected a ws:// or wss:// URL"),
        (["watch", "--url", "http://127.0.0.1:9000/ws-fapi/v1"], {}, "expected a ws:// or wss://"),
        (["price", "BTCUSDT"], {"TICKERD_URL": "ws://[::1"},
         "argument --url: 'ws://[::1' (from TICKERD_URL): expected a ws:// or wss:// URL"),
        (["price", "--timeout", "abc"], {},
         "argument --timeout: 'abc' is not a positive number of seconds"),
        (["price", "--timeout", "nan"], {}, "'nan' is not a positive number of seconds"),
        (["watch", "--interval", "-1"], {}, "'-1' is not a positive number of seconds"),
    ],
)  # fmt: skip
def test_client_commands_refuse_bad_urls_and_numbers(
    args: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tickerd", *args],
        check=False, capture_output=True, text=True, timeout=60, env=child_env(env),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr and "_positive" not in done.stderr


# -- Settings built in Python ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"port": 70000}, "Settings port=70000 (--port): expected an integer from 0 to 65535"),
        ({"ping_interval": 0.0}, "Settings ping_interval=0.0 (--ping-interval): expected a number from 0.2"),
        ({"tick_rate": float("nan")}, "Settings tick_rate=nan (--tick-rate): expected a number"),
        ({"max_connections": 0}, "Settings max_connections=0 (--max-connections)"),
        ({"path": "noslash"}, "Settings path='noslash' (--path): expected a URL path"),
        ({"push_token": "a b"}, "Settings push_token=... (--push-token): expected a token"),
    ],
)  # fmt: skip
def test_service_and_fixture_apply_the_same_rules(fields: dict[str, Any], message: str) -> None:
    from tickerd.app import Service
    from tickerd.testing import TickerdServer

    with pytest.raises(SettingError) as info:
        Service(Settings(**fields))
    assert str(info.value).startswith(message)
    assert "a b" not in str(info.value)
    if "port" in fields:
        return  # the fixture chooses its own ports
    with pytest.raises(RuntimeError, match="could not start: " + re.escape(message)):
        TickerdServer(**fields).start()
