"""Generators on other hosts: network namespaces on this machine, tcp with CURVE, a host cut off.

Topology (our own test hosts, made and removed by this test):

    root ns (plugin, test client) ── 10.231.N.0/30 ── hub ns (broker, binds tcp on its links)
    gen1 ns (worker w1) ── 10.231.N.4/30 ── hub        gen2 ns (worker w2) ── 10.231.N.8/30 ── hub
"""

import functools
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from recording import recording_pipeline
from support import ROOT, authorized, curve_client, plugin_of, wait_for_workers
from test_sites import CHANNEL, recorded

from services.common.security import ClientKeys, create_keys
from services.hostemu.host import Datasource, PluginHost
from services.packaging.bundle import write_launchers
from services.plugin._proto import pluginv2_pb2 as pb
from services.publish import Publisher, Unreachable

CONTROL, FRAMES_IN, FRAMES_OUT, PUBLISH, HISTORY = 5570, 5571, 5572, 5573, 5574
FIXTURES = itertools.count()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"zsprobe{os.getpid() % 10000}"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError:
        return False
    ip("netns", "del", probe)
    return True


pytestmark = pytest.mark.skipif(not netns_available(), reason="needs root and ip netns")


@dataclass
class Hosts:
    prefix: str
    subnet: int
    processes: list[subprocess.Popen[bytes]]

    def ns(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def link(self, name: str, index: int) -> tuple[str, str]:
        """Join `name` (None = root) to the hub; return (hub side address, host side address)."""
        hub_if, host_if = f"{self.prefix}{index}h", f"{self.prefix}{index}x"
        hub_ip, host_ip = f"10.231.{self.subnet}.{4 * index + 1}", f"10.231.{self.subnet}.{4 * index + 2}"
        ip("link", "add", hub_if, "type", "veth", "peer", "name", host_if)
        ip("link", "set", hub_if, "netns", self.ns("hub"))
        ip("netns", "exec", self.ns("hub"), "ip", "addr", "add", f"{hub_ip}/30", "dev", hub_if)
        ip("netns", "exec", self.ns("hub"), "ip", "link", "set", hub_if, "up")
        prefix = [] if name == "root" else ["netns", "exec", self.ns(name), "ip"]
        if name != "root":
            ip("link", "set", host_if, "netns", self.ns(name))
        ip(*prefix, "addr", "add", f"{host_ip}/30", "dev", host_if)
        ip(*prefix, "link", "set", host_if, "up")
        return hub_ip, host_ip

    def run(self, namespace: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(namespace), sys.executable, *args],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.processes.append(process)
        return process


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Hosts, dict[str, str], Path]]:
    n = next(FIXTURES)  # a namespace's links go a while after it: the next test's have other names
    hosts = Hosts(prefix=f"zs{os.getpid() % 1000}{n}", subnet=(os.getpid() + n) % 200 + 20, processes=[])
    names = ["hub", "gen1", "gen2"]
    try:
        for name in names:
            ip("netns", "add", hosts.ns(name))
            ip("netns", "exec", hosts.ns(name), "ip", "link", "set", "lo", "up")
        addresses = {}
        for index, name in enumerate(["root", "gen1", "gen2"]):
            addresses[name], _ = hosts.link(name, index)
        yield hosts, addresses, tmp_path
    finally:
        for process in hosts.processes:
            process.kill()
            process.wait()
        for name in names:
            subprocess.run(["ip", "netns", "del", hosts.ns(name)], capture_output=True)


def test_remote_generators_stream_over_curve_and_survive_a_host_cut_off(
    hosts: tuple[Hosts, dict[str, str], Path],
) -> None:
    net, hub_address, tmp = hosts
    keys, allowed = tmp / "keys", tmp / "allowed"
    create_keys(keys, ["broker", "w1", "w2", "plugin"])
    allowed.mkdir()
    for name in ("w1", "w2", "plugin"):
        (allowed / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
    net.run(
        "hub",
        "-m",
        "services.broker",
        "--control-endpoint",
        f"tcp://0.0.0.0:{CONTROL}",
        "--frames-in-endpoint",
        f"tcp://0.0.0.0:{FRAMES_IN}",
        "--frames-out-endpoint",
        f"tcp://0.0.0.0:{FRAMES_OUT}",
        "--curve-server-secret",
        str(keys / "broker.key_secret"),
        "--curve-authorized-dir",
        str(allowed),
        log=tmp / "broker.log",
    )
    for worker in ("w1", "w2"):
        host = "gen1" if worker == "w1" else "gen2"
        net.run(
            host,
            "-m",
            "services.generator",
            "--worker-id",
            worker,
            "--control-endpoint",
            f"tcp://{hub_address[host]}:{CONTROL}",
            "--curve-client-secret",
            str(keys / f"{worker}.key_secret"),
            "--curve-server-public",
            str(keys / "broker.key"),
            log=tmp / f"{worker}.log",
        )
    control = f"tcp://{hub_address['root']}:{CONTROL}"
    plugin = PluginHost(
        write_launchers(tmp)[0],
        {
            "control_endpoint": control,
            "curve_client_secret": str(keys / "plugin.key_secret"),
            "curve_server_public": str(keys / "broker.key"),
        },
    )
    try:
        wait_for_workers(plugin, 2)
        paths = ["custom-0-1-20", "custom-0-1-30"]
        streams = [plugin.run_stream(path) for path in paths]
        for stream in streams:
            stream.read_rows(5)
        owner = channel_owners(plugin)
        assert sorted(owner[p] for p in paths) == ["w1", "w2"], "each remote host runs one channel"
        cut = next(p for p in paths if owner[p] == "w1")
        ip("netns", "exec", net.ns("hub"), "ip", "link", "set", f"{net.prefix}1h", "down")  # gen1 is gone
        cut_at = time.time()
        stream = streams[paths.index(cut)]
        before = len(stream.frame.times_ns)
        deadline = time.monotonic() + 10
        while not any(t > cut_at * 1e9 for t in stream.frame.times_ns[before:]):
            assert time.monotonic() < deadline, "the channel did not come back after its host was cut off"
            stream.read_rows(len(stream.frame.times_ns) + 1)
        resumed = time.time() - cut_at
        print(
            f"\n[figure] generator host cut off → its channel resumed on the other host after {resumed:.2f} s"
        )
        assert channel_owners(plugin)[cut] == "w2"
        times = stream.frame.times_ns
        assert {b - a for a, b in itertools.pairwise(times)} == {20_000_000}, (
            "rows repeated, reordered or lost"
        )
        for s in streams:
            s.cancel()
    finally:
        plugin.stop()


def channel_owners(plugin: PluginHost) -> dict[str, str]:
    """{channel: worker} as the plugin's `channels` resource reports the broker's view."""
    response = plugin.call_resource("channels")
    assert response.code == 200
    return {c["path"]: c["worker"] for c in orjson.loads(response.body)["channels"]}


def test_a_site_over_tcp_with_curve_answers_from_its_own_recorder(
    hosts: tuple[Hosts, dict[str, str], Path],
) -> None:
    """Site B in the hub namespace (broker and recorder bound on wildcard tcp, CURVE), site A a
    local pipeline; B's datasource holds its CURVE keys. No row crosses between the sites."""
    net, hub_address, tmp = hosts
    keys = tmp / "keys"
    names = ["w1", "recorder", "plugin", "publisher"]
    create_keys(keys, ["broker", *names])
    allowed = authorized(keys, tmp / "allowed", names)
    server = [
        "--curve-server-secret",
        str(keys / "broker.key_secret"),
        "--curve-authorized-dir",
        str(allowed),
    ]
    client = functools.partial(curve_client, keys)

    local = f"tcp://127.0.0.1:{CONTROL}"
    net.run(
        "hub",
        *["-m", "services.broker", "--pipeline", "site-b", *server],
        *[
            "--control-endpoint",
            f"tcp://0.0.0.0:{CONTROL}",
            "--frames-in-endpoint",
            f"tcp://0.0.0.0:{FRAMES_IN}",
        ],
        *["--frames-out-endpoint", f"tcp://0.0.0.0:{FRAMES_OUT}"],
        log=tmp / "broker.log",
    )
    net.run(
        "hub",
        "-m",
        "services.generator",
        "--pipeline",
        "site-b",
        "--worker-id",
        "w1",
        "--control-endpoint",
        local,
        *client("w1"),
        log=tmp / "w1.log",
    )
    net.run(
        "hub",
        *[
            "-m",
            "services.recorder",
            "--pipeline",
            "site-b",
            *server,
            "--publish-authorized-dir",
            str(allowed),
        ],
        *[
            "--control-endpoint",
            local,
            "--frames-out-endpoint",
            f"tcp://127.0.0.1:{FRAMES_OUT}",
            *client("recorder"),
        ],
        *["--publish-endpoint", f"tcp://0.0.0.0:{PUBLISH}", "--history-endpoint", f"tcp://0.0.0.0:{HISTORY}"],
        log=tmp / "recorder.log",
    )
    site_b = Datasource(
        uid="site-b",
        json_data={"brokerAddress": f"tcp://{hub_address['root']}:{CONTROL}", "allowPublish": True},
        secure_json_data={
            "curveSecretKey": (keys / "plugin.key_secret").read_text(),
            "brokerPublicKey": (keys / "broker.key").read_text(),
        },
    )
    now_ms = time.time_ns() // 1_000_000
    publisher_keys = ClientKeys.from_files(str(keys / "publisher.key_secret"), str(keys / "broker.key"))
    deadline = time.monotonic() + 20
    while True:  # until B's recorder is up
        try:
            with Publisher(
                f"tcp://{hub_address['root']}:{PUBLISH}", publisher_keys, timeout_s=1
            ) as publisher:
                publisher.publish(CHANNEL, [{"time": now_ms - 3000, "site": "b"}])
            break
        except Unreachable:
            assert time.monotonic() < deadline, "site B's recorder did not come up"
            time.sleep(0.1)
    with recording_pipeline() as a:
        with Publisher(a.publish_endpoint) as publisher:
            publisher.publish(CHANNEL, [{"time": now_ms - 3000, "site": "a"}])
        with plugin_of(a) as host:
            wait_for_workers(host, 1, site_b)
            assert recorded(host, Datasource(uid="site-a")) == ["a"]
            assert recorded(host, site_b) == ["b"], "site B's datasource read another site's recorder"
            context = site_b.context()
            body = orjson.dumps({"time": now_ms - 2000, "site": "b-grafana"})
            request = pb.PublishStreamRequest(pluginContext=context, path=CHANNEL, data=body)
            assert host.stream.PublishStream(request).status == pb.PublishStreamResponse.OK
            assert recorded(host, site_b) == ["b", "b-grafana"]
            assert recorded(host, Datasource(uid="site-a")) == ["a"]
