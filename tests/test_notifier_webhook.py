"""The webhook notifier against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alert_samples import sample_alert
from receivers import WebhookReceiver as Receiver
from receivers import webhook_receiver
from standardwebhooks import Webhook

import trialwatch.monitor
from trialwatch.notifiers.base import Alert, ConfigurationError, DeliveryError
from trialwatch.notifiers.registry import build_channel
from trialwatch.notifiers.webhook import WebhookConfig, WebhookNotifier

KEY = b"a 32-byte key for the test hooks"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def make_alert(**overrides: Any) -> Alert:
    defaults: dict[str, Any] = {"channel": "ops-hook",
                                "title": "CAR-T Cell Therapy for Refractory Lupus — “quoted” <b>"}
    return sample_alert(**{**defaults, **overrides})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as state:
        yield state


def notifier(url: str, env: dict[str, str] | None = None, **settings: Any) -> WebhookNotifier:
    table = {"url": url, **settings}
    return WebhookNotifier(WebhookConfig.model_validate(table), env or {})


def signed(url: str, **settings: Any) -> WebhookNotifier:
    return notifier(url, {"HOOK_SECRET": SECRET}, secret_env="HOOK_SECRET", **settings)


def test_posts_compact_json_payload_with_standard_headers(receiver: Receiver) -> None:
    alert = make_alert()
    signed(receiver.url).send(alert)

    (request,) = receiver.requests
    assert request.path == "/hooks/trialwatch"
    assert json.loads(request.body) == alert.payload()
    assert request.body == json.dumps(
        alert.payload(), separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"trialwatch/{trialwatch.monitor.__version__}"
    assert request.headers["webhook-id"] == "alert-0001"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    payload = json.loads(request.body)
    assert payload["type"] == "trial.changed"
    assert payload["url"] == "https://clinicaltrials.gov/study/NCT07328581"


def test_signature_verifies_with_standardwebhooks_and_plain_hmac(receiver: Receiver) -> None:
    signed(receiver.url).send(make_alert())

    (request,) = receiver.requests
    assert Webhook(SECRET).verify(request.body, request.headers) == make_alert().payload()

    msg_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    expected = hmac.new(
        KEY, f"{msg_id}.{timestamp}.".encode() + request.body, hashlib.sha256
    ).digest()
    version, signature = request.headers["webhook-signature"].split(",", 1)
    assert version == "v1"
    assert hmac.compare_digest(base64.b64decode(signature), expected)


def test_tampered_body_fails_verification(receiver: Receiver) -> None:
    signed(receiver.url).send(make_alert())
    (request,) = receiver.requests
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(request.body.replace(b"RECRUITING", b"COMPLETED"), request.headers)


def test_secret_without_prefix_is_taken_as_base64_key(receiver: Receiver) -> None:
    raw = base64.b64encode(KEY).decode()
    notifier(receiver.url, {"S": raw}, secret_env="S").send(make_alert())
    (request,) = receiver.requests
    Webhook(raw).verify(request.body, request.headers)
    Webhook(SECRET).verify(request.body, request.headers)


def test_unsigned_without_secret_env(receiver: Receiver) -> None:
    notifier(receiver.url).send(make_alert())
    (request,) = receiver.requests
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == "alert-0001"


def test_same_alert_sent_twice_keeps_its_webhook_id(receiver: Receiver) -> None:
    hook = signed(receiver.url)
    hook.send(make_alert())
    hook.send(make_alert())
    hook.send(make_alert(id="alert-0002"))

    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert ids == ["alert-0001", "alert-0001", "alert-0002"]


def test_test_alert_has_its_own_type(receiver: Receiver) -> None:
    notifier(receiver.url).send(make_alert(test=True, events=[]))
    assert json.loads(receiver.requests[0].body)["type"] == "trial.test"


def test_extra_headers_are_sent(receiver: Receiver) -> None:
    notifier(receiver.url, headers={"Authorization": "Bearer abc", "X-Team": "lupus"}).send(
        make_alert()
    )
    headers = receiver.requests[0].headers
    assert headers["authorization"] == "Bearer abc" and headers["x-team"] == "lupus"


def test_server_error_is_a_delivery_error_without_the_secret(receiver: Receiver) -> None:
    receiver.status = 500
    with pytest.raises(DeliveryError) as caught:
        signed(receiver.url).send(make_alert())
    text = str(caught.value)
    assert "HTTP 500" in text
    assert "127.0.0.1" in text
    assert SECRET not in text and SECRET.removeprefix("whsec_") not in text


def test_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.status = 302
    receiver.location = receiver.url + "/elsewhere"
    with pytest.raises(DeliveryError, match=r"HTTP 302.*redirects are not followed"):
        notifier(receiver.url).send(make_alert())
    assert len(receiver.requests) == 1


def test_timeout_is_a_delivery_error(receiver: Receiver) -> None:
    receiver.delay = 2.0
    with pytest.raises(DeliveryError, match=r"timed out after 0\.3s"):
        notifier(receiver.url, timeout=0.3).send(make_alert())


def test_connection_refused_is_a_delivery_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryError, match=rf"webhook http://127\.0\.0\.1:{port}/…: ConnectError"):
        signed(f"http://127.0.0.1:{port}/hook?token=t0ps3cret").send(make_alert())


def test_error_messages_do_not_show_url_path_or_query(receiver: Receiver) -> None:
    receiver.status = 404
    with pytest.raises(DeliveryError) as caught:
        notifier(receiver.url + "?token=t0ps3cret").send(make_alert())
    assert "t0ps3cret" not in str(caught.value)
    assert "hooks/trialwatch" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.org/hook", "file:///etc/passwd", "javascript:alert(1)", "example.org/hook",
     "https://", "https://exa mple.org/"],
)
def test_non_http_urls_are_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_channel("ops-hook", {"type": "webhook", "url": url}, {})
    assert caught.value.key == "channels.ops-hook.url"


def test_missing_secret_env_var_names_the_key() -> None:
    table = {"type": "webhook", "url": "https://example.org/h", "secret_env": "TW_HOOK_SECRET"}
    with pytest.raises(ConfigurationError) as caught:
        build_channel("ops-hook", table, {})
    assert str(caught.value) == (
        "channels.ops-hook.secret_env: environment variable TW_HOOK_SECRET is not set"
    )


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!!!!!!", "%%%%%%%%"])
def test_unusable_secret_is_rejected_without_echoing_it(secret: str) -> None:
    table = {"type": "webhook", "url": "https://example.org/h", "secret_env": "S"}
    with pytest.raises(ConfigurationError) as caught:
        build_channel("ops-hook", table, {"S": secret})
    assert caught.value.key == "channels.ops-hook.secret_env"
    assert "!!!!" not in str(caught.value) and "%%%%" not in str(caught.value)


def test_secret_is_not_in_repr() -> None:
    hook = signed("https://example.org/hooks/abc")
    assert SECRET.removeprefix("whsec_") not in repr(hook)
    assert repr(hook) == "WebhookNotifier(url='https://example.org/…', signed=True)"


@pytest.mark.parametrize(
    "headers",
    [{"webhook-signature": "v1,forged"}, {"Content-Type": "text/plain"}, {"Bad Name": "x"},
     {"X-Ok": "line\r\nInjected: 1"}],
)
def test_unsafe_extra_headers_are_rejected(headers: dict[str, str]) -> None:
    table = {"type": "webhook", "url": "https://example.org/h", "headers": headers}
    with pytest.raises(ConfigurationError) as caught:
        build_channel("ops-hook", table, {})
    assert caught.value.key == "channels.ops-hook.headers"


def test_timeout_defaults_to_ten_seconds_and_accepts_durations() -> None:
    assert WebhookConfig(url="https://example.org/h").timeout == 10.0
    assert WebhookConfig.model_validate({"url": "https://e.org/h", "timeout": "1m"}).timeout == 60
