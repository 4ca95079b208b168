"""The metrics: what a scrape shows, read from the status model, and how it is served."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError

from gateway.aura.client import AuraClient, Exchange, status_class
from gateway.config.models import AuraCredentials, AuraSettings, MetricsSettings
from gateway.errors import CloudError
from gateway.journal import Journal, NewIncident
from gateway.metrics import TEXTFILE_NAME, Metrics, gateway_version
from gateway.signals import BOOT_ID, Press, Stamp
from gateway.status import DeviceHealth, InputHealth, StatusModel, UnknownDevice


def parse(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def busy_status() -> StatusModel:
    status = StatusModel(devices=7)
    status.uplink = "down"
    status.pending_alarms = 2
    status.open_callouts = {"inc-aaaaaaaaaaaa": "Responder Dispatched"}
    status.failed_incidents = {"inc-bbbbbbbbbbbb": "HTTP 403: no subscription"}
    status.inputs["receiver"] = InputHealth(
        connected=True,
        state="ok",
        last_frame_age_s=1.5,
        frames_ok=120,
        bad_frames=3,
        counters={"frames_ok": 120, "crc_errors": 2, "decode_errors": 1, "reopens": 4},
    )
    status.inputs["broker"] = InputHealth(state="lost")
    status.devices_seen = {
        "00a1b2c3": DeviceHealth(silent=True, silent_reason="no check-in"),
        "00a1b2c4": DeviceHealth(battery_low=True, tamper=True),
    }
    status.unknown_devices = {"cafe0001": UnknownDevice("serial", 1.0, 2.0)}
    for name, n in {
        "auth_failures": 5,
        "presses_replay": 2,
        "presses_repeat": 9,
        "presses_resend": 1,
        "presses_raised": 4,
    }.items():
        status.count(name, n)
    status.journal = {"used_bytes": 1000.0, "disk_bytes": 4096.0, "fill_pct": 37.5}
    return status


def test_a_scrape_shows_the_status_by_name_and_label() -> None:
    values = parse(Metrics(busy_status(), gateway="shop-jhb-014").render())

    def v(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert v("aura_gateway_up") == 1
    assert v("aura_gateway_info", gateway="shop-jhb-014", version=gateway_version()) == 1
    assert v("aura_gateway_uplink_state", state="down") == 1
    assert v("aura_gateway_uplink_state", state="up") == 0
    assert v("aura_gateway_queue_depth", **{"class": "alarm"}) == 2
    assert v("aura_gateway_open_callouts") == 1
    assert v("aura_gateway_undeliverable_alarms") == 1
    assert v("aura_gateway_devices_configured") == 7
    assert v("aura_gateway_devices_silent") == 1
    assert v("aura_gateway_devices_battery_low") == 1
    assert v("aura_gateway_devices_tampered") == 1
    assert v("aura_gateway_unknown_devices") == 1
    assert v("aura_gateway_input_up", input="receiver") == 1
    assert v("aura_gateway_input_up", input="broker") == 0
    assert v("aura_gateway_input_last_frame_age_seconds", input="receiver") == 1.5
    assert v("aura_gateway_input_frames_total", input="receiver") == 120
    assert v("aura_gateway_input_bad_frames_total", input="receiver") == 3
    assert v("aura_gateway_input_link_events_total", input="receiver", event="crc_errors") == 2
    assert v("aura_gateway_input_link_events_total", input="receiver", event="reopens") == 4
    assert v("aura_gateway_auth_failures_total") == 5
    assert v("aura_gateway_replays_total") == 2
    assert v("aura_gateway_press_repeats_total", kind="repeat") == 9
    assert v("aura_gateway_press_repeats_total", kind="resend") == 1
    assert v("aura_gateway_events_total", event="presses_raised") == 4
    assert v("aura_gateway_journal_fill_ratio") == 0.375
    assert v("aura_gateway_press_to_accept_seconds_count") == 0
    assert v("aura_gateway_uplink_errors_total", **{"class": "5xx"}) == 0
    assert not any(name.endswith("_created") for name, _ in values)


def test_no_label_or_value_names_a_customer_device_or_incident() -> None:
    text = Metrics(busy_status()).render().decode()
    for private in ("00a1b2c3", "00a1b2c4", "cafe0001", "inc-", "subscription", "Responder"):
        assert private not in text


def _incident(journal: Journal, device: str, mono_ns: int, wall: float) -> str:
    new = NewIncident(
        key=f"customer:{device}",
        device_id=device,
        route="customer",
        request={"route": "customer", "customer_id": 1, "body": {"location": {"latitude": 1}}},
        location_reason="fresh device fix",
    ).with_id()
    press = Press(
        source="test",
        device_id=device,
        gesture="single",
        dedup_key=f"k-{device}",
        stamp=Stamp(mono_ns=mono_ns, wall=wall, boot_id=BOOT_ID),
    )
    journal.commit_press(
        press, decision="raise", reason="test", incident_id=None, new_incident=new, claim=False
    )
    return new.id


async def test_the_oldest_undelivered_alarm_and_outbox_come_from_the_journal(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        now = time.monotonic_ns()
        _incident(journal, "dev1", now - 42 * 10**9, time.time() - 42)
        _incident(journal, "dev2", now - 5 * 10**9, time.time() - 5)
        facts = journal.queue_facts()
        assert facts["waiting"] == {"raise": 2}
        assert facts["oldest_undelivered"][0] == now - 42 * 10**9
        assert facts["live_callouts"] == 0

        async def read_facts() -> dict[str, Any]:
            return journal.queue_facts()

        metrics = Metrics(busy_status(), facts=read_facts)
        metrics.bind(asyncio.get_running_loop())
        # Scraped from another thread (the HTTP server's): the reading hops onto the loop.
        values = parse(await asyncio.to_thread(metrics.render))
        age = values[("aura_gateway_oldest_undelivered_alarm_age_seconds", ())]
        assert 42 <= age < 50
        assert values[("aura_gateway_outbox_waiting", (("kind", "raise"),))] == 2
        assert values[("aura_gateway_outbox_waiting", (("kind", "cancel"),))] == 0
        assert values[("aura_gateway_queue_depth", (("class", "location"),))] == 0
    finally:
        journal.close()


class _Incident:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def test_press_to_accept_is_observed_from_the_press_stamp() -> None:
    metrics = Metrics(StatusModel())
    pressed = time.monotonic_ns()
    metrics.accepted(
        _Incident(
            press_boot_id=BOOT_ID, press_mono_ns=pressed, press_wall=0.0, press_wall_trusted=False
        ),
        pressed + 30_000_000,
    )
    # Pressed before a restart, with a clock nobody trusted: no figure rather than a wrong one.
    metrics.accepted(
        _Incident(
            press_boot_id="old-boot", press_mono_ns=1, press_wall=5.0, press_wall_trusted=False
        ),
        pressed,
    )
    values = parse(metrics.render())
    assert values[("aura_gateway_press_to_accept_seconds_count", ())] == 1
    assert values[("aura_gateway_press_to_accept_seconds_sum", ())] == pytest.approx(0.03)
    assert values[("aura_gateway_press_to_accept_seconds_bucket", (("le", "0.025"),))] == 0
    assert values[("aura_gateway_press_to_accept_seconds_bucket", (("le", "0.05"),))] == 1


def test_status_classes() -> None:
    assert [status_class(c) for c in (200, 201, 285, 301, 400, 401, 403, 404, 408, 429, 502)] == [
        None,
        None,
        None,
        "redirect",
        "rejected",
        "unauthorized",
        "rejected",
        "rejected",
        "timeout",
        "429",
        "5xx",
    ]


async def test_uplink_errors_are_counted_by_class_through_the_client() -> None:
    answers = iter([503, 429, 404, 401, 401])

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json={"accessToken": "t", "expiresIn": 3600})
        if request.url.path.endswith("/activeCallouts"):
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(next(answers), json={"message": "no"})

    metrics = Metrics(StatusModel())
    client = AuraClient(
        AuraSettings(base_url="https://aura.example"),
        AuraCredentials(client_id=SecretStr("i"), client_secret=SecretStr("s")),
        transport=httpx.MockTransport(answer),
    )
    client.observers.append(metrics.observe_exchange)
    try:
        for _ in range(4):  # 503, 429, 404, then 401 twice (a new token, then again)
            with pytest.raises(CloudError):
                await client.get_callout(1)
        with pytest.raises(CloudError):
            await client.active_callouts()
    finally:
        await client.aclose()
    values = parse(metrics.render())
    counted = {
        dict(labels)["class"]: n
        for (name, labels), n in values.items()
        if name == "aura_gateway_uplink_errors_total"
    }
    assert counted == {
        "5xx": 1,
        "429": 1,
        "rejected": 1,
        "unauthorized": 2,
        "unreachable": 1,
        "timeout": 0,
        "transport": 0,
        "redirect": 0,
    }
    metrics.observe_exchange(Exchange("request", "GET", "/x"))  # requests are not errors
    assert parse(metrics.render())[("aura_gateway_uplink_errors_total", (("class", "5xx"),))] == 1


def test_textfile_is_replaced_atomically(tmp_path: Path) -> None:
    metrics = Metrics(busy_status())
    directory = tmp_path / "textfile"
    path = metrics.write_textfile(directory)
    assert path == directory / TEXTFILE_NAME
    first = path.stat().st_ino
    metrics.status.pending_alarms = 5
    metrics.write_textfile(directory)
    assert os.listdir(directory) == [TEXTFILE_NAME]  # no temporary file left behind
    assert path.stat().st_ino != first  # a new file renamed over the old: never half written
    values = parse(path.read_text())
    assert values[("aura_gateway_queue_depth", (("class", "alarm"),))] == 5


async def test_run_writes_the_textfile_and_leaves_up_0_at_a_stop(tmp_path: Path) -> None:
    metrics = Metrics(busy_status())
    settings = MetricsSettings(textfile_dir=tmp_path, interval_s=1)
    task = asyncio.create_task(metrics.run(settings))
    path = tmp_path / TEXTFILE_NAME
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.02)
    assert parse(path.read_text())[("aura_gateway_up", ())] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert parse(path.read_text())[("aura_gateway_up", ())] == 0


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "192.168.1.20:9464", ":9464", "[::]:9464"])
def test_listen_is_loopback_only(listen: str) -> None:
    with pytest.raises(ValidationError, match="loopback"):
        MetricsSettings(listen=listen)


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "localhost:9464", "[::1]:9464"])
def test_loopback_listen_is_accepted(listen: str) -> None:
    assert MetricsSettings(listen=listen).listen == listen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_served_over_http_on_loopback(tmp_path: Path) -> None:
    status = busy_status()
    metrics = Metrics(status)
    port = _free_port()
    task = asyncio.create_task(metrics.run(MetricsSettings(listen=f"127.0.0.1:{port}")))
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/metrics")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            assert response.status_code == 200
            values = parse(response.text)
            assert values[("aura_gateway_open_callouts", ())] == 1
            status.open_callouts.clear()
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert parse(response.text)[("aura_gateway_open_callouts", ())] == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
