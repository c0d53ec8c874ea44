"""The egress rules of providers/egress.py, without a network: URL parsing, address
classification in every spelling, the save-time lookup (stubbed), the Bedrock endpoint
rule, and the pieces of request shaping the guard relies on (custom headers, short
upstream messages). tests/test_egress_connect.py dials."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from axonflow_site.errors import InvalidConfig
from providers import egress
from providers.adapters import custom
from providers.adapters.http import MESSAGE_CHARS, error_message

ROOT = Path(__file__).resolve().parent.parent

# (base URL, what the refusal says): refused whatever AXONFLOW_ALLOW_PRIVATE_BASE_URLS says.
ALWAYS_REFUSED = [
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://2852039166/v1", "cloud metadata"),  # decimal
    ("http://0251.0376.0251.0376/v1", "cloud metadata"),  # octal
    ("http://0xa9fea9fe/v1", "cloud metadata"),  # hex
    ("http://0xA9.0376.43518/v1", "cloud metadata"),  # mixed bases, last part fills two bytes
    ("http://169.254.43518/v1", "cloud metadata"),  # short form
    ("http://169.254.169.254./v1", "cloud metadata"),  # trailing dot
    ("http://[::ffff:169.254.169.254]/v1", "cloud metadata"),  # IPv4-mapped
    ("http://[::ffff:a9fe:a9fe]/v1", "cloud metadata"),
    ("http://[::FFFF:A9FE:A9FE]:80/v1", "cloud metadata"),
    ("http://[::ffff:0:a9fe:a9fe]/v1", "cloud metadata"),  # IPv4-translated
    ("http://[::a9fe:a9fe]/v1", "cloud metadata"),  # IPv4-compatible
    ("http://[64:ff9b::169.254.169.254]/v1", "cloud metadata"),  # NAT64
    ("http://[2002:a9fe:a9fe::1]/v1", "cloud metadata"),  # 6to4
    ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),  # AWS IMDS over IPv6 (inside fc00::/7)
    ("http://100.100.100.200/latest/meta-data/", "cloud metadata"),  # Alibaba (inside CGNAT)
    ("http://192.0.0.192/opc/v2/instance/", "cloud metadata"),  # Oracle (inside 192.0.0.0/24)
    ("http://169.254.170.2/v2/credentials", "cloud metadata"),  # ECS task credentials
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ("http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/", "cloud metadata"),
    ("http://169.254.1.1/v1", "link-local"),
    ("http://[fe80::1]/v1", "link-local"),
    ("http://[fe80::1%25eth0]/v1", "link-local"),  # zone id
    ("http://[::ffff:169.254.1.1]/v1", "link-local"),
    ("http://0/v1", "unspecified"),
    ("http://0:8000/v1", "unspecified"),
    ("http://0.0.0.0:8000/v1", "unspecified"),
    ("http://0x0/v1", "unspecified"),
    ("http://[::]/v1", "unspecified"),
    ("http://[::ffff:0.0.0.0]/v1", "unspecified"),
    ("http://224.0.0.1/v1", "multicast"),
    ("http://[ff02::1]/v1", "multicast"),
    ("http://240.0.0.1/v1", "reserved"),
    ("http://255.255.255.255/v1", "reserved"),
    ("http://192.0.2.1/v1", "reserved"),  # documentation
    ("http://198.51.100.7/v1", "reserved"),
    ("http://203.0.113.9/v1", "reserved"),
    ("http://198.18.0.1/v1", "reserved"),  # benchmarking
    ("http://192.0.0.8/v1", "reserved"),  # IETF protocol assignments
    ("http://[2001:db8::1]/v1", "reserved"),
    ("http://[64:ff9b:1::a00:1]/v1", "reserved"),  # local-use NAT64
    ("http://[fec0::1]/v1", "reserved"),  # site-local
    ("http://[4000::1]/v1", "reserved"),  # outside global unicast
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/v1", "Teredo"),
]

# Refused unless private base URLs are allowed.
PRIVATE = [
    ("http://127.0.0.1:8100/v1", "loopback", "http://127.0.0.1:8100/v1"),
    ("http://127.1:8100/v1", "loopback", "http://127.0.0.1:8100/v1"),
    ("http://2130706433:8100/v1", "loopback", "http://127.0.0.1:8100/v1"),
    ("http://0x7f000001/v1", "loopback", "http://127.0.0.1/v1"),
    ("http://017700000001/v1", "loopback", "http://127.0.0.1/v1"),
    ("http://[::1]:11434", "loopback", "http://[::1]:11434"),
    ("http://[::ffff:127.0.0.1]:11434", "loopback", "http://[::ffff:7f00:1]:11434"),
    ("http://localhost:11434", "loopback", "http://localhost:11434"),
    ("http://LocalHost.:11434/", "loopback", "http://localhost:11434"),
    ("http://ollama.localhost:11434", "loopback", "http://ollama.localhost:11434"),
    ("http://10.1.2.3:8000/v1", "private", "http://10.1.2.3:8000/v1"),
    ("http://172.16.0.1/v1", "private", "http://172.16.0.1/v1"),
    ("http://192.168.1.10:8000/v1", "private", "http://192.168.1.10:8000/v1"),
    ("http://[fd12:3456::1]/v1", "private", "http://[fd12:3456::1]/v1"),
    ("http://100.64.0.1/v1", "CGNAT", "http://100.64.0.1/v1"),
    ("http://[::ffff:100.64.0.1]/v1", "CGNAT", "http://[::ffff:6440:1]/v1"),
]

# Not URLs the adapters may be given at all.
MALFORMED = [
    ("file:///etc/passwd", "http:// or https://"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "http:// or https://"),
    ("ftp://example.com/", "http:// or https://"),
    ("dict://127.0.0.1:11211/", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("//example.com/v1", "http:// or https://"),
    ("http:///v1", "http:// or https://"),
    ("example.com/v1", "http:// or https://"),
    ("http://user:pw@example.com/v1", "credentials"),
    ("http://user@example.com/v1", "credentials"),
    ("http://example.com@169.254.169.254/v1", "credentials"),
    ("http://169.254.169.254#@example.com/v1", "'?' or '#'"),
    ("http://169.254.169.254?@example.com/v1", "'?' or '#'"),
    ("https://evil.example/steal?", "'?' or '#'"),
    ("https://evil.example/steal?x=", "'?' or '#'"),
    ("https://evil.example/steal#", "'?' or '#'"),
    ("http://example.com\\@169.254.169.254/", "backslashes"),
    ("http://exa mple.com/v1", "spaces"),
    ("http://example.com/\nv1", "spaces"),
    ("http://exämple.com/v1", "ASCII"),
    ("http://%31%32%37.0.0.1/v1", "host name"),
    ("http://-bad-.example/v1", "host name"),
    ("http://a..b/v1", "host name"),
    ("http://1.2.3.4.5/v1", "valid IP address"),
    ("http://256.1.1.1/v1", "valid IP address"),
    ("http://08.1.1.1/v1", "valid IP address"),  # 8 is not an octal digit
    ("http://example.0x10/v1", "valid IP address"),
    ("http://[::1/v1", "URL"),
    ("http://[not-v6]/v1", "URL"),
    ("http://[1.2.3.4]/v1", "URL"),
    ("http://example.com:99999/v1", "URL"),
    ("http://example.com:0/v1", "port"),
    ("http://" + "a" * 500 + ".com/", "ASCII URL"),
]


@pytest.fixture
def no_dns(monkeypatch):
    """Save-time lookups answer nothing (as a name that does not resolve)."""
    monkeypatch.setattr(egress, "lookup", lambda host, port, family=0, flags=0: [])


def refused(url: str, allow_private: bool) -> str:
    with pytest.raises(InvalidConfig) as caught:
        egress.check_base_url(url, allow_private=allow_private)
    error = caught.value
    assert (error.code, error.http_status, error.details) == ("invalid_config", 400, {"field": "base_url"})
    assert error.message.startswith("base_url: ")
    return error.message


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("url, reason", ALWAYS_REFUSED)
def test_it_always_refuses_link_local_metadata_unspecified_multicast_and_reserved(no_dns, url, reason, allow_private):
    assert reason in refused(url, allow_private)


@pytest.mark.parametrize("url, reason, normalised", PRIVATE)
def test_it_refuses_loopback_private_and_cgnat_unless_allowed(no_dns, url, reason, normalised):
    message = refused(url, allow_private=False)
    assert reason in message and "not allowed on this server" in message
    assert egress.check_base_url(url, allow_private=True) == normalised


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("url, reason", MALFORMED)
def test_it_refuses_what_is_not_a_plain_http_url(no_dns, url, reason, allow_private):
    assert reason in refused(url, allow_private)


@pytest.mark.parametrize(
    "url, normalised",
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("https://API.OpenAI.com/v1/", "https://api.openai.com/v1"),
        ("HTTPS://api.anthropic.com", "https://api.anthropic.com"),
        ("https://api.openai.com./v1", "https://api.openai.com/v1"),
        ("http://8.8.8.8:8000/v1", "http://8.8.8.8:8000/v1"),
        ("http://134744072:8000/v1", "http://8.8.8.8:8000/v1"),  # decimal spelling, normalised
        ("http://[2606:4700::6810:84e5]/v1", "http://[2606:4700::6810:84e5]/v1"),
        ("http://[::ffff:8.8.8.8]/v1", "http://[::ffff:808:808]/v1"),
        ("http://[64:ff9b::8.8.8.8]/v1", "http://[64:ff9b::808:808]/v1"),
        (
            "https://my-vllm.internal_corp.example:8443/openai/v1/",
            "https://my-vllm.internal_corp.example:8443/openai/v1",
        ),
        ("https://generativelanguage.googleapis.com", "https://generativelanguage.googleapis.com"),
        ("https://example.com/a;b/v1", "https://example.com/a;b/v1"),
    ],
)
def test_it_accepts_and_normalises_public_urls(no_dns, url, normalised):
    assert egress.check_base_url(url, allow_private=False) == normalised


# --- addresses ------------------------------------------------------------------------------------

NUMERIC_HOSTS = [
    "2852039166", "0251.0376.0251.0376", "0xa9fea9fe", "0XA9FEA9FE", "0xa9.0xfe.0xa9.0xfe", "169.254.43518",
    "169.16689662", "127.1", "127.0.1", "0", "0x0", "00", "0177.1", "10.0x10.1", "1.2.3.4", "255.255.255.255",
    "4294967295", "0x100000000", "256.1.1.1", "1.2.3.4.5", "08", "0x", "1.0x1g", "", "1..2", "-1",
]  # fmt: skip


@pytest.mark.parametrize("host", NUMERIC_HOSTS)
def test_numeric_hosts_parse_as_the_c_library_reads_them(host):
    """What the resolver would dial is what the guard classifies (glibc inet_aton)."""
    try:
        expected = ipaddress.IPv4Address(socket.inet_aton(host)) if host else None
    except OSError:
        expected = None
    if host == "0x":  # glibc reads a bare 0x as 0; the WHATWG parser (and this one) too
        expected = ipaddress.IPv4Address(0)
    assert egress.legacy_ipv4(host) == expected


@pytest.mark.parametrize(
    "address, reason",
    [
        ("169.254.169.254", "cloud metadata"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fe80::1%eth0", "link-local"),
        ("fe80::1%2", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("100.127.255.254", "CGNAT"),
        ("not-an-address", "not an IP address"),
    ],
)
def test_check_address_refuses_with_a_clear_message(address, reason):
    with pytest.raises(egress.EgressRefused) as caught:
        egress.check_address(address, allow_private=False)
    assert caught.value.message.startswith("egress refused: ") and reason in caught.value.message


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"]
)
def test_check_address_lets_public_addresses_through(address):
    assert egress.check_address(address, allow_private=False)


def test_check_address_follows_the_setting_when_not_told(settings):
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = True
    assert egress.check_address("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = False
    with pytest.raises(egress.EgressRefused):
        egress.check_address("127.0.0.1")
    with pytest.raises(egress.EgressRefused):  # never, whatever the setting
        egress.check_address("169.254.169.254", allow_private=True)


# --- the save-time lookup -------------------------------------------------------------------------


def answers(*addresses: str):
    def lookup(host, port, family=0, flags=0):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a, port) for a in addresses]

    return lookup


@pytest.mark.parametrize(
    "addresses, reason",
    [
        (["169.254.169.254"], "cloud metadata"),
        (["93.184.215.14", "10.0.0.7"], "private"),  # one refused answer refuses the name
        (["93.184.215.14", "fe80::1%3"], "link-local"),
        (["::ffff:127.0.0.1"], "loopback"),
    ],
)
def test_a_name_resolving_to_a_refused_address_is_refused_at_save(monkeypatch, addresses, reason):
    monkeypatch.setattr(egress, "lookup", answers(*addresses))
    message = refused("https://llm.example.com/v1", allow_private=False)
    assert "llm.example.com resolves to" in message and reason in message


def test_a_name_resolving_to_public_addresses_is_accepted(monkeypatch):
    monkeypatch.setattr(egress, "lookup", answers("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"))
    assert egress.check_base_url("https://llm.example.com/v1", allow_private=False) == "https://llm.example.com/v1"


def test_a_name_that_does_not_resolve_is_accepted_at_save_and_checked_when_dialled(monkeypatch):
    def fail(host, port, family=0, flags=0):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(egress, "lookup", fail)
    assert egress.check_base_url("https://not-yet.example.com/v1", allow_private=False)


def test_the_save_time_lookup_asks_for_the_urls_port(monkeypatch):
    asked = []
    monkeypatch.setattr(egress, "lookup", lambda host, port, family=0, flags=0: asked.append((host, port)) or [])
    egress.check_base_url("https://llm.example.com/v1")
    egress.check_base_url("http://llm.example.com:8000/v1")
    assert asked == [("llm.example.com", 443), ("llm.example.com", 8000)]


def test_a_slow_resolver_does_not_hold_the_save(monkeypatch):
    import threading

    release = threading.Event()
    monkeypatch.setattr(egress, "lookup", lambda host, port, family=0, flags=0: release.wait(5) and [])
    monkeypatch.setattr(egress, "RESOLVE_TIMEOUT_SECONDS", 0.05)
    try:
        assert egress.resolve_once("slow.example.com", 443, timeout=0.05) == []
    finally:
        release.set()


def test_ip_literals_and_refused_names_are_never_looked_up(monkeypatch):
    monkeypatch.setattr(egress, "lookup", lambda *a, **k: pytest.fail("looked up"))
    egress.check_base_url("http://8.8.8.8/v1", allow_private=False)
    refused("http://localhost:11434", allow_private=False)
    refused("http://metadata.google.internal/", allow_private=True)


def test_the_real_resolver_sees_localhost_as_loopback():
    message = refused("http://localhost:11434", allow_private=False)
    assert "loopback" in message


# --- through the one rule set ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_rule_set_raises_invalid_config_for_a_refused_base_url(acme, settings, no_dns):
    from providers.validation import validate_provider_config

    settings.AXONFLOW_ALLOW_PRIVATE_BASE_URLS = False
    body = {"name": "p", "type": "openai", "model": "m", "base_url": "http://[::ffff:169.254.169.254]/v1"}
    with pytest.raises(InvalidConfig) as caught:
        validate_provider_config(acme, body)
    assert caught.value.details == {"field": "base_url"}
    cleaned = validate_provider_config(acme, {**body, "base_url": "HTTPS://API.example.com/v1/"})
    assert cleaned["base_url"] == "https://api.example.com/v1"


# --- Bedrock -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://bedrock-runtime.us-east-1.amazonaws.com",
        "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com",
        "https://bedrock-runtime.cn-north-1.amazonaws.com.cn",
        "https://vpce-0a1b2c3d4e5f-abcdefgh.bedrock-runtime.eu-west-1.vpce.amazonaws.com",
    ],
)
def test_a_bedrock_override_may_be_an_aws_endpoint(url):
    assert egress.check_bedrock_endpoint(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://bedrock-runtime.us-east-1.amazonaws.com",  # not TLS: SigV4-signed requests in clear
        "https://bedrock-runtime.us-east-1.amazonaws.com.evil.example",
        "https://bedrock-runtime.us-east-1.amazonaws.com:8443",
        "https://bedrock-runtime.us-east-1.amazonaws.com/prefix",
        "https://evil.example",
        "https://amazonaws.com",
        "https://s3.us-east-1.amazonaws.com",
        "https://vpce.amazonaws.com",
        "http://127.0.0.1:8100/bedrock",
    ],
)
def test_a_bedrock_override_elsewhere_is_refused(url):
    with pytest.raises(InvalidConfig) as caught:
        egress.check_bedrock_endpoint(url)
    assert caught.value.details == {"field": "base_url"}


@pytest.mark.django_db
def test_the_rule_set_refuses_a_bedrock_override_outside_aws(acme, no_dns):
    from providers.validation import validate_provider_config

    body = {"name": "br", "type": "bedrock", "model": "m", "region": "us-east-1", "api_key": "secret-access-key",
            "settings": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"}}  # fmt: skip
    with pytest.raises(InvalidConfig):
        validate_provider_config(acme, {**body, "base_url": "https://evil.example"})
    ok = validate_provider_config(acme, {**body, "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com"})
    assert ok["base_url"] == "https://bedrock-runtime.us-east-1.amazonaws.com"


# --- what the guard relies on -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["Host", "host", "Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer",
     "Transfer-Encoding", "Upgrade", "Content-Length", "Content-Type"],
)  # fmt: skip
def test_a_custom_provider_cannot_set_hop_by_hop_or_host_headers(name):
    with pytest.raises(InvalidConfig) as caught:
        custom.Settings.parse({"headers": {name: "x"}})
    assert caught.value.details == {"field": "settings"}
    with pytest.raises(InvalidConfig):
        custom.Settings.parse({"auth_header": name})


def test_a_custom_provider_may_set_ordinary_headers():
    parsed = custom.Settings.parse(
        {"headers": {"X-Tenant": "acme", "api-version": "2024-06-01"}, "auth_header": "api-key"}
    )
    assert parsed.headers == (("X-Tenant", "acme"), ("api-version", "2024-06-01")) and parsed.auth_header == "api-key"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>\n<body>\n" + b"ami-id\ninstance-id\nsecurity-credentials/role\n" * 100 + b"</body></html>",
        b'{"error": {"message": "' + b"x" * 3000 + b'"}}',
        b'{"message": "line one\\nline two\\r\\n\\tline three"}',
    ],
)
def test_upstream_error_text_is_one_short_line(body):
    message = error_message(body)
    assert len(message) <= MESSAGE_CHARS and "\n" not in message and "\r" not in message and "\t" not in message


def test_the_setting_is_strict_at_import():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXONFLOW_ALLOW")}
    bad = subprocess.run(
        [sys.executable, "-c", "import axonflow_site.settings"],
        cwd=ROOT, env={**env, "DEBUG": "true", "AXONFLOW_ALLOW_PRIVATE_BASE_URLS": "ture"}, capture_output=True,
        text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "AXONFLOW_ALLOW_PRIVATE_BASE_URLS must be true or false" in bad.stderr
    code = "import axonflow_site.settings as s; print(s.AXONFLOW_ALLOW_PRIVATE_BASE_URLS)"
    default = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**env, "DEBUG": "true"}, capture_output=True, text=True
    )
    assert default.stdout.strip() == "False"
