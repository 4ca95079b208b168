"""A real mosquitto per test, on free loopback ports, with optional password and TLS.

CI must exercise the real broker: when mosquitto is missing the test fails under CI and
skips (naming the package) on a developer machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
USER, PASSWORD = "gateway", "broker-pass-9f2c"


def require(binary: str, package: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        message = f"{binary} not installed (apt install {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path  # a CA that did not sign the server: "wrong CA"


def make_certs(folder: Path) -> Certs:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, and a stranger CA."""
    require("openssl", "openssl")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for name in ("ca", "other-ca"):
        run(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=test {name}",
        )  # fmt: skip
    run(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost",
    )  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
    )  # fmt: skip
    (folder / "server.key").chmod(0o644)  # mosquitto may drop to its own user
    return Certs(
        folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "other-ca.crt"
    )


class Mosquitto:
    """One broker: ``port`` (plain) and, with certs, ``tls_port``. Restartable on the same
    ports; sessions live as long as the process (persistence off)."""

    def __init__(
        self, workdir: Path, *, password: bool = False, certs: Certs | None = None
    ) -> None:
        require("mosquitto", "mosquitto")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if certs else None
        self.password = password
        self.certs = certs
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"

    def _config(self) -> Path:
        lines = ["per_listener_settings false", "persistence false", "log_dest stderr"]
        lines += ["log_type error", "log_type warning", "log_type notice", "log_type information"]
        if os.geteuid() == 0:
            lines.append("user root")
        if self.password:
            pwfile = self.workdir / "passwd"
            require("mosquitto_passwd", "mosquitto")
            subprocess.run(
                ["mosquitto_passwd", "-c", "-b", str(pwfile), USER, PASSWORD],
                check=True,
                capture_output=True,
            )
            pwfile.chmod(0o644)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        lines.append(f"listener {self.port} 127.0.0.1")
        if self.certs is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.certs.ca}",
                f"certfile {self.certs.server_cert}",
                f"keyfile {self.certs.server_key}",
            ]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> Mosquitto:
        config = self._config()
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(config)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not listen within 5 s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def client(self, client_id: str = "", **kwargs: Any) -> TestClient:
        return TestClient(self, client_id, **kwargs)


class TestClient:
    """A second MQTT client, as a button bridge or an operator's monitor would be."""

    __test__ = False

    def __init__(self, broker: Mosquitto, client_id: str = "", *, login: bool = True) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if broker.password and login:
            self.client.username_pw_set(USER, PASSWORD)
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)
        self.client.connect("127.0.0.1", broker.port, 30)
        self.client.loop_start()

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def wait_for(
        self, predicate: Callable[[mqtt.MQTTMessage], bool], timeout: float = 10
    ) -> mqtt.MQTTMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if predicate(message):
                    return message
            time.sleep(0.02)
        seen = [(m.topic, m.payload[:200], m.retain) for m in self.messages]
        raise AssertionError(f"no matching message within {timeout} s; seen {seen}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
