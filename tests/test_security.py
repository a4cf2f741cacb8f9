"""CURVE on every broker socket: authorized peers stream, unknown ones can do nothing."""

import contextlib
import time
from pathlib import Path

import zmq
import zmq.auth
from support import Pipeline, plugin_of, running_pipeline, wait_for_workers

from services.common import protocol
from services.common.security import ClientKeys, create_keys, secure_client
from services.hostemu.host import Datasource
from services.plugin._proto import pluginv2_pb2 as pb

FAKE_VALUE = 666.0


def test_only_authorized_keys_can_control_publish_or_subscribe(tmp_path: Path) -> None:
    pipeline, keys = curve_pipeline(tmp_path)
    plugin_settings = {
        "curve_server_public": str(keys / "broker.key"),
        "curve_client_secret": str(keys / "plugin.key_secret"),
    }
    with contextlib.closing(pipeline), plugin_of(pipeline, plugin_settings) as host:
        endpoints = Path(host.executable).parent  # the shim lives in the run dir, beside the sockets
        health = host.check_health()
        assert health.status == pb.CheckHealthResponse.OK, health.message

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sockets: list[zmq.Socket[bytes]] = []
        try:

            def intruder(kind: int, name: str | None, endpoint: str) -> zmq.Socket[bytes]:
                sock = ctx.socket(kind)
                sockets.append(sock)
                sock.linger = 0
                if name is not None:
                    secure_client(
                        sock,
                        ClientKeys.from_files(str(keys / f"{name}.key_secret"), str(keys / "broker.key")),
                    )
                sock.connect(f"ipc://{endpoints}/{endpoint}")
                return sock

            for name in ("intruder", None):  # an unknown key, and no CURVE at all
                control = intruder(zmq.DEALER, name, "control")
                control.send_multipart(protocol.encode(protocol.StatusRequest("x")))
                assert not control.poll(1000), f"{name or 'a plain client'} got a control reply"
            spy = intruder(zmq.SUB, "intruder", "frames-out")
            spy.subscribe(b"")
            forger = intruder(zmq.PUB, "intruder", "frames-in")

            stream = host.run_stream("custom-0-1-20")
            stream.read_rows(5)
            for _ in range(50):
                forger.send(protocol.rows_frame("custom-0-1-20", 1, 1, [protocol.float_bytes([FAKE_VALUE])]))
                time.sleep(0.01)
            frame = stream.read_rows(40)
            stream.cancel()
            assert FAKE_VALUE not in frame.column("value")
            assert all(0 <= v <= 1 for v in frame.column("value"))
            assert not spy.poll(200), "an unauthorized subscriber received frames"
        finally:
            for sock in sockets:
                sock.close()
            ctx.term()


def test_publish_is_denied() -> None:
    with running_pipeline(1) as host:
        request = pb.PublishStreamRequest(path="custom-0-1-20", data=b'{"x":1}')
        response = host.stream.PublishStream(request, timeout=5)
        assert response.status == pb.PublishStreamResponse.PERMISSION_DENIED


def curve_pipeline(tmp_path: Path) -> tuple[Pipeline, Path]:
    """A broker with CURVE letting in w1 and `plugin`, and w1; keys in tmp_path/keys."""
    keys = tmp_path / "keys"
    create_keys(keys, ["broker", "w1", "plugin", "intruder"])
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for name in ("w1", "plugin"):
        (allowed / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
    broker_args = [
        "--curve-server-secret",
        str(keys / "broker.key_secret"),
        "--curve-authorized-dir",
        str(allowed),
    ]
    worker_args = [
        "--curve-client-secret",
        str(keys / "w1.key_secret"),
        "--curve-server-public",
        str(keys / "broker.key"),
    ]
    return Pipeline(1, broker_args, worker_args), keys


def keyed(uid: str, secret: str, broker_public: str) -> Datasource:
    """A datasource whose secure fields hold CURVE keys as pasted into the ConfigEditor."""
    return Datasource(uid=uid, secure_json_data={"curveSecretKey": secret, "brokerPublicKey": broker_public})


def test_a_datasource_reaches_a_curve_broker_with_the_keys_in_its_secure_settings_alone(
    tmp_path: Path,
) -> None:
    pipeline, keys = curve_pipeline(tmp_path)
    try:
        host = pipeline.plugin()  # no key anywhere in its settings
        try:
            secret = (keys / "plugin.key_secret").read_text()  # the whole file, pasted
            public = zmq.auth.load_certificate(str(keys / "broker.key"))[0].decode()  # the bare key
            datasource = keyed("curve", secret, public)
            wait_for_workers(host, 1, datasource)
            stream = host.run_stream("custom-0-1-20", datasource)
            assert all(0 <= v <= 1 for v in stream.read_rows(10).column("value"))
            stream.cancel()

            intruder = keyed("intruder", (keys / "intruder.key_secret").read_text(), public)
            health = host.check_health(intruder)
            assert health.status == pb.CheckHealthResponse.ERROR
            assert f"CURVE refused by the broker at {pipeline.control_endpoint}" in health.message
            refused = host.run_stream("custom-0-1-20", intruder)
            (notice,) = refused.read_notices(timeout_s=8)  # the stall check runs every heartbeat (1 s)
            assert "CURVE refused by the broker" in notice["text"]
            refused.cancel()

            half = keyed("half", secret, "")
            health = host.check_health(half)
            assert "set both the plugin's secret key and the broker's public key" in health.message
            typo = keyed("typo", "not a key", public)
            assert "paste the 40-character key" in host.check_health(typo).message
        finally:
            host.stop()
    finally:
        pipeline.close()
