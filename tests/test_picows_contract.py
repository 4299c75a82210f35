"""What tickerd relies on in picows (``transport/picows_adapter.py``), checked one by one so
a picows upgrade that changes any of it fails here by name, not somewhere in a socket test.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version

import picows
import pytest
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest
from picows.picows import (  # type: ignore[attr-defined]
    WSAutoPingStrategy,
    WSProtocol,
    _make_test_ws_frame,
    _validate_upgrade_request,
)

from tickerd.transport import picows_adapter
from tickerd.transport.picows_adapter import (
    accept_connection_token_list,
    refusal,
    response,
    server_protocol,
    wire_log,
)

WSPROTOCOL_ARGS = 15  # host_port … read_buffer_init_size


def test_version_is_the_pinned_minor():
    major, minor, *_ = (int(p) for p in version("picows").split(".")[:2])
    assert (major, minor) == (2, 3), "picows changed minor: re-check picows_adapter.py"


def _args() -> list[object]:
    return [
        None, None, False, lambda request: None, wire_log, True, 5.0,
        False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE, False, 1024, None, 4096,
    ]  # fmt: skip


def test_private_wsprotocol_takes_exactly_fifteen_positional_arguments():
    async def build() -> None:
        args = _args()
        assert len(args) == WSPROTOCOL_ARGS
        WSProtocol(*args)
        with pytest.raises(TypeError):
            WSProtocol(*args[:-1])
        with pytest.raises(TypeError):
            WSProtocol(*args, None)

    asyncio.run(build())


def test_server_protocol_builds_and_exposes_transport_and_listener():
    async def build() -> None:
        proto = server_protocol(
            lambda request: None, handshake_timeout=1.0, max_frame_size=1024, read_buffer_bytes=4096
        )
        assert isinstance(proto, WSProtocol) and isinstance(proto, asyncio.BufferedProtocol)
        assert proto.transport is None and proto.listener is None  # set on connection_made

    asyncio.run(build())


def test_frame_attributes_used_by_the_listener():
    frame = _make_test_ws_frame(WSMsgType.TEXT, b"abc", True, False)
    assert isinstance(frame, WSFrame)
    assert frame.msg_type is WSMsgType.TEXT  # identity: the frame path compares with ``is``
    assert (frame.fin, frame.rsv1, frame.rsv2, frame.rsv3) == (1, 0, 0, 0)
    assert frame.last_in_buffer in (0, 1)
    assert frame.payload_size == 3 and frame.get_payload_as_bytes() == b"abc"


def test_enum_values_match_the_wire():
    """The listener passes ``msg_type.value`` as the RFC 6455 opcode and builds close codes
    from ints (3000-4999 included)."""
    opcodes = {m.name: m.value for m in WSMsgType}
    assert opcodes == {
        "CONTINUATION": 0, "TEXT": 1, "BINARY": 2, "CLOSE": 8, "PING": 9, "PONG": 10,
    }  # fmt: skip
    for code in (1000, 1002, 1007, 1008, 1009, 3000, 4999):
        assert WSCloseCode(code).value == code


@pytest.mark.parametrize(
    "name",
    ["underlying_transport", "is_close_frame_sent", "send_close", "disconnect"],
)
def test_transport_members_used(name):
    assert hasattr(WSTransport, name), f"picows.WSTransport lost {name}"


@pytest.mark.parametrize(
    "name", ["on_ws_connected", "on_ws_frame", "on_ws_disconnected", "pause_writing"]
)
def test_listener_callbacks(name):
    assert hasattr(WSListener, name)


def _request(connection: str, version: str = "13") -> WSUpgradeRequest:
    from multidict import CIMultiDict

    request = WSUpgradeRequest()
    request.method, request.path, request.version = b"GET", b"/", b"HTTP/1.1"
    request.headers = CIMultiDict(
        {
            "Host": "h",
            "Upgrade": "websocket",
            "Connection": connection,
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": version,
        }
    )
    return request


def test_connection_token_list_still_needs_the_fix():
    """picows still refuses ``Connection: keep-alive, Upgrade``; once it accepts it, drop
    ``accept_connection_token_list``."""
    request = _request("keep-alive, Upgrade")
    with pytest.raises(RuntimeError, match="CONNECTION"):
        _validate_upgrade_request(request)
    accept_connection_token_list(request)
    assert _validate_upgrade_request(request) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_picows_accepts_versions_the_server_must_refuse_itself():
    """picows answers versions 7 and 8 with 101: the server's route refuses them first."""
    assert _validate_upgrade_request(_request("Upgrade", "8"))
    assert _validate_upgrade_request(_request("Upgrade", "7"))


def test_responses_carry_status_headers_and_no_listener():
    answer = refusal(426, b"x", {"Sec-WebSocket-Version": "13"}, "text/plain")
    assert answer.listener is None and answer.response.status == 426
    assert answer.response.headers["Sec-WebSocket-Version"] == "13"
    assert answer.response.headers["Content-Type"] == "text/plain"
    assert answer.response.body == b"x"
    ok = response(b"{}")
    assert ok.response.status == 200 and ok.response.headers["Content-Type"] == "application/json"


def test_wire_log_demotes_client_caused_messages(caplog):
    caplog.set_level(logging.DEBUG, logger="tickerd.server.wire")
    wire_log.info("New connection accepted: x")
    wire_log.error("WS parser error: %s, initiate disconnect", "x")
    wire_log.error("Unhandled exception from user's WSListener.on_ws_frame")
    levels = [(r.levelno, r.getMessage()[:10]) for r in caplog.records]
    assert levels == [
        (logging.DEBUG, "New connec"),
        (logging.DEBUG, "WS parser "),
        (logging.ERROR, "Unhandled "),
    ]


def test_only_the_adapter_imports_picows_on_the_server_side():
    """The server reaches picows through the adapter only (the client has its own use)."""
    from pathlib import Path

    src = Path(picows_adapter.__file__).parents[1]
    server_side = [*src.glob("transport/*.py"), src / "wsconn.py", src / "frames.py"]
    server_side.append(src / "faults.py")
    importers = sorted(
        p.relative_to(src).as_posix()
        for p in server_side
        if "import picows" in p.read_text() or "from picows" in p.read_text()
    )
    assert importers == ["transport/picows_adapter.py"]
    assert picows.__name__ == "picows"
