"""The outbound address rule (`outbound_address`): the classifier, the spellings, the resolver seam, the
operator's exceptions and the guarded transport.

This machine's network rule: nothing here opens a connection. Names are answered by injected resolvers,
and the guarded transport wraps an httpx.MockTransport, which connects nowhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import httpx
import pytest

from luminai_actors.config import Settings
from luminai_actors.errors import ConfigError, EvolutionError, EvolutionPermanentError
from luminai_actors.evolution.client import EvolutionClient
from luminai_actors.outbound_address import AddressPolicy, AddressRefused, GuardedTransport, refusal_reason

PUBLIC_V4 = "93.184.215.14"  # a public unicast address; nothing here connects to it
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolver_of(answers: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    """A resolver seam answering from a table, recording every question; unknown names fail like DNS."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> Sequence[str]:
        asked.append(host)
        if host not in answers:
            raise OSError(f"no address for {host}")
        return answers[host]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def refuses(policy: AddressPolicy, url: str) -> str:
    with pytest.raises(AddressRefused) as caught:
        policy.check_url(url)
    return caught.value.reason


NOWHERE = AddressPolicy(resolver=resolver_of({}))


# The classifier -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),  # limited broadcast
        ("192.0.2.10", "private"),  # documentation range
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("::7f00:1", "127.0.0.1"),  # IPv4-compatible
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4 of loopback
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64 of the metadata service
    ],
)
def test_non_public_addresses_are_refused_with_a_reason(address: str, reason: str) -> None:
    found = refusal_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize("address", [PUBLIC_V4, "8.8.8.8", PUBLIC_V6, "::ffff:93.184.215.14"])
def test_public_unicast_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


# Spellings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "http://2130706433/",  # decimal
        "http://0x7f000001/",  # hex
        "http://127.1/",  # short
        "http://0177.0.0.1/",  # octal
        "http://0177.1:5432/",
        "http://127.0.0.1./",  # trailing dot
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://0/",  # 0.0.0.0
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/",  # 169.254.169.254 in hex
        "http://3232235777/",  # 192.168.1.1 in decimal
        "http://localhost:5432",
        "http://LOCALHOST./",
        "http://evolution.localhost/",
    ],
)
def test_every_spelling_of_a_refused_address_is_refused_without_asking_a_resolver(url: str) -> None:
    resolve = resolver_of({})
    reason = refuses(AddressPolicy(resolver=resolve), url)
    # httpx itself rejects a four-part host it cannot read as IPv4 (e.g. octal 0177.0.0.1)
    assert "only public addresses are allowed" in reason or "Invalid IPv4 address" in reason
    assert resolve.asked == []  # type: ignore[attr-defined]  # literals and localhost never reach DNS


@pytest.mark.parametrize(
    "url", ["ftp://evo.example.com/", "file:///etc/passwd", "http:///nohost", "gopher://x"]
)
def test_only_http_urls_with_a_host_are_accepted(url: str) -> None:
    refuses(NOWHERE, url)


# Names and the resolver seam ----------------------------------------------------------------------------


def test_a_name_that_resolves_to_a_refused_address_is_refused() -> None:
    policy = AddressPolicy(resolver=resolver_of({"evo.attacker.example": ["127.0.0.1"]}))
    reason = refuses(policy, "https://evo.attacker.example/")
    assert "'evo.attacker.example' resolves to 127.0.0.1 is loopback" in reason


def test_every_resolved_address_is_checked_not_only_the_first() -> None:
    policy = AddressPolicy(resolver=resolver_of({"evo.example.com": [PUBLIC_V4, "10.0.0.7"]}))
    assert "10.0.0.7 is private" in refuses(policy, "https://evo.example.com/")


def test_a_trailing_dot_name_is_the_same_name() -> None:
    resolve = resolver_of({"evo.example.com": ["192.168.0.5"]})
    refuses(AddressPolicy(resolver=resolve), "https://EVO.example.com./")
    assert resolve.asked == ["evo.example.com"]  # type: ignore[attr-defined]


def test_a_name_that_does_not_resolve_is_refused() -> None:
    assert "cannot be resolved" in refuses(NOWHERE, "https://nowhere.example.com/")


def test_a_name_with_only_public_addresses_passes() -> None:
    policy = AddressPolicy(resolver=resolver_of({"evo.example.com": [PUBLIC_V4, PUBLIC_V6]}))
    policy.check_url("https://evo.example.com/")
    assert [str(a) for a in policy.resolve("evo.example.com", 443)] == [PUBLIC_V4, PUBLIC_V6]


# The operator's exceptions (LUMINAI_EVOLUTION_ALLOWED_HOSTS) ------------------------------------------


def test_allowed_hosts_admit_names_ips_and_networks() -> None:
    resolve = resolver_of({"evolution.internal": ["10.1.2.3"], "other.internal": ["10.9.9.9"]})
    policy = AddressPolicy.from_entries(["evolution.internal.", "127.0.0.1", "172.20.0.0/16"], resolve)
    policy.check_url("http://evolution.internal:8080")  # the name is allowed, whatever it resolves to
    policy.check_url("http://127.0.0.1:8080")
    policy.check_url("http://2130706433:8080")  # the same address, another spelling
    policy.check_url("http://[::ffff:127.0.0.1]:8080")
    policy.check_url("http://172.20.4.5/")
    assert "10.9.9.9 is private" in refuses(policy, "http://other.internal/")
    assert "private" in refuses(policy, "http://172.21.0.1/")
    assert "loopback" in refuses(policy, "http://127.0.0.2/")


def test_settings_read_allowed_hosts_and_refuse_a_malformed_entry() -> None:
    settings = Settings.from_env({"LUMINAI_EVOLUTION_ALLOWED_HOSTS": " evo.lan , 10.0.0.0/8,::1 "})
    assert settings.evolution_allowed_hosts == ("evo.lan", "10.0.0.0/8", "::1")
    assert settings.address_policy.allowed_names == frozenset({"evo.lan"})
    assert Settings.from_env({}).evolution_allowed_hosts == ()
    with pytest.raises(ConfigError, match="LUMINAI_EVOLUTION_ALLOWED_HOSTS"):
        Settings.from_env({"LUMINAI_EVOLUTION_ALLOWED_HOSTS": "http://evo.lan/"})


# The guarded transport: resolve once, check, connect to the checked address ----------------------------


class Recorder:
    def __init__(self, status: int = 200, body: object = None, headers: dict[str, str] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._response = (status, body, headers or {})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body, headers = self._response
        return httpx.Response(status, json=body, headers=headers)


def test_the_request_goes_to_the_checked_address_keeping_host_and_tls_name() -> None:
    resolve = resolver_of({"evo.example.com": [PUBLIC_V4]})
    recorder = Recorder(200, {"instance": {"instanceName": "acme", "state": "open"}})
    transport = GuardedTransport(AddressPolicy(resolver=resolve), httpx.MockTransport(recorder))
    with httpx.Client(transport=transport) as http:
        http.get("https://evo.example.com/instance/connectionState/acme")

    (sent,) = recorder.requests
    assert sent.url.host == PUBLIC_V4  # no second lookup between the check and the connection
    assert sent.url.path == "/instance/connectionState/acme"
    assert sent.headers["host"] == "evo.example.com"
    assert sent.extensions["sni_hostname"] == "evo.example.com"
    assert resolve.asked == ["evo.example.com"]  # type: ignore[attr-defined]


def test_a_name_that_rebinds_to_loopback_is_refused_at_connection_time() -> None:
    """Saved while it resolved to a public address; by the time a reply is sent it answers 127.0.0.1."""
    answers: dict[str, Sequence[str]] = {"evo.example.com": [PUBLIC_V4]}
    policy = AddressPolicy(resolver=resolver_of(answers))
    policy.check_url("https://evo.example.com")
    answers["evo.example.com"] = ["127.0.0.1"]
    recorder = Recorder()
    client = EvolutionClient(httpx.MockTransport(recorder), policy=policy)
    try:
        with pytest.raises(EvolutionPermanentError, match="loopback"):
            client.send_text("https://evo.example.com", "k", "acme", "5511999990000", "hi")
    finally:
        client.close()
    assert recorder.requests == []  # nothing was sent anywhere


def test_trusted_calls_skip_the_rule_and_untrusted_calls_follow_no_redirect() -> None:
    recorder = Recorder(302, {}, {"location": "http://127.0.0.1:6379/"})
    policy = AddressPolicy(resolver=resolver_of({"evo.example.com": [PUBLIC_V4]}))
    client = EvolutionClient(httpx.MockTransport(recorder), policy=policy)
    try:
        with pytest.raises(EvolutionPermanentError, match="loopback"):
            client.connection_state("http://127.0.0.1:8080", "k", "acme")
        assert recorder.requests == []
        with pytest.raises(EvolutionError, match=r"no instance\.state"):  # the 302 itself was the answer
            client.connection_state("http://127.0.0.1:8080", "k", "acme", trusted=True)
        assert len(recorder.requests) == 1  # the operator's agent was called, and the redirect not followed
        with pytest.raises(EvolutionError, match=r"no instance\.state"):
            client.connection_state("https://evo.example.com", "k", "acme")
        assert [r.url.host for r in recorder.requests] == ["127.0.0.1", PUBLIC_V4]  # not to the Location
    finally:
        client.close()


def test_an_error_shows_evolutions_reason_never_the_raw_body_of_whatever_answered() -> None:
    banner = {"redis_version": "7.0.15", "secret": "internal"}
    client = EvolutionClient(httpx.MockTransport(Recorder(404, banner)))
    try:
        with pytest.raises(EvolutionPermanentError) as caught:
            client.connection_state("http://127.0.0.1:8080", "k", "acme", trusted=True)
    finally:
        client.close()
    assert "internal" not in str(caught.value)
    assert "redis_version" not in str(caught.value)
    assert "no reason given" in str(caught.value)
