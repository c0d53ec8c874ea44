"""The base-URL guard (SPEC §6): which URLs a provider may point at and which addresses
the gateway may dial.

Two checks, one rule set:

- `check_base_url(url)` when a config is saved: only http and https, no credentials,
  no `?` or `#` (either would swallow the path the adapter appends), a sane host, the
  host classified in every spelling a resolver accepts (`2852039166`, `0251.0376.0251.0376`,
  `0xa9fea9fe`, `127.1`, `0`, `[::ffff:169.254.169.254]`), and a name resolved once:
  any refused address refuses the URL. A name that does not resolve yet is accepted; it
  is checked when dialled.
- `check_address(ip)` at connect time, on every address the shared aiohttp session
  dials (providers/adapters/http.py), so DNS rebinding cannot slip past the save-time
  check.

Always refused: link-local, cloud metadata, unspecified, multicast, and the special
ranges that are neither private nor globally reachable (IANA's special-purpose
registries: documentation, benchmarking, protocol assignments, 240/4…), also wrapped in
IPv6 (IPv4-mapped, -compatible, -translated, NAT64, 6to4, Teredo). Loopback, private
and CGNAT (100.64.0.0/10) addresses only with `AXONFLOW_ALLOW_PRIVATE_BASE_URLS`: a
local Ollama or the demo's fake upstream needs them; a multi-tenant deployment must not.

- IPv4 registry: https://www.iana.org/assignments/iana-ipv4-special-registry/
- IPv6 registry: https://www.iana.org/assignments/iana-ipv6-special-registry/
- Host parsing follows the WHATWG URL standard's IPv4 parser (what inet_aton and
  getaddrinfo accept): https://url.spec.whatwg.org/#concept-ipv4-parser
"""

from __future__ import annotations

import ipaddress
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

from django.conf import settings

from axonflow_site.errors import InvalidConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_v4 = ipaddress.IPv4Network
_v6 = ipaddress.IPv6Network

# Instance metadata services; each sits inside a range refused anyway except the ones in
# CGNAT (Alibaba), ULA (AWS IPv6) and 192.0.0.0/24 (Oracle), which are why this exists.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle…
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS Pod Identity
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity over IPv6
    )
)
# Names that resolve to a metadata service inside its cloud; refused by name so the
# answer does not depend on where the check runs.
METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)

# Refused unless AXONFLOW_ALLOW_PRIVATE_BASE_URLS (reason, networks).
PRIVATE_RANGES: tuple[tuple[str, tuple[_v4 | _v6, ...]], ...] = (
    ("a loopback address", (_v4("127.0.0.0/8"), _v6("::1/128"))),
    ("a private address", (_v4("10.0.0.0/8"), _v4("172.16.0.0/12"), _v4("192.168.0.0/16"), _v6("fc00::/7"))),
    ("a CGNAT (shared) address", (_v4("100.64.0.0/10"),)),
)
# Always refused (reason, networks), checked before PRIVATE_RANGES.
REFUSED_RANGES: tuple[tuple[str, tuple[_v4 | _v6, ...]], ...] = (
    ("a link-local address", (_v4("169.254.0.0/16"), _v6("fe80::/10"))),
    ("an unspecified address", (_v4("0.0.0.0/8"), _v6("::/128"))),
    ("a multicast address", (_v4("224.0.0.0/4"), _v6("ff00::/8"))),
    (
        "a reserved address",
        (
            _v4("192.0.0.0/24"),  # IETF protocol assignments
            _v4("192.0.2.0/24"),  # documentation (TEST-NET-1)
            _v4("198.51.100.0/24"),  # documentation (TEST-NET-2)
            _v4("203.0.113.0/24"),  # documentation (TEST-NET-3)
            _v4("198.18.0.0/15"),  # benchmarking
            _v4("192.88.99.0/24"),  # deprecated 6to4 relay anycast
            _v4("240.0.0.0/4"),  # reserved, and the limited broadcast address
            _v6("64:ff9b:1::/48"),  # local-use NAT64: reaches whatever the local translator does
            _v6("100::/63"),  # discard-only and dummy prefixes
            _v6("2001:2::/48"),  # benchmarking
            _v6("2001:10::/28"),  # deprecated ORCHID
            _v6("2001:db8::/32"),  # documentation
            _v6("3fff::/20"),  # documentation
            _v6("5f00::/16"),  # SRv6 SIDs
            _v6("fec0::/10"),  # deprecated site-local
        ),
    ),
)
GLOBAL_UNICAST_V6 = _v6("2000::/3")
NAT64 = _v6("64:ff9b::/96")
IPV4_TRANSLATED = _v6("::ffff:0:0:0/96")
IPV4_COMPATIBLE = _v6("::/96")

HOST_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
URL_CHARS_RE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces
DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_TIMEOUT_SECONDS = 2.0
MAX_URL_LENGTH = 500

_resolver_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="egress-dns")


class EgressRefused(Exception):
    """An address the gateway will not dial. `message` reads
    "egress refused: 169.254.169.254 is a link-local address"."""

    def __init__(self, address: str, reason: str):
        self.address = address
        self.reason = reason
        self.message = f"egress refused: {address} is {reason}"
        super().__init__(self.message)


def private_allowed() -> bool:
    return bool(getattr(settings, "AXONFLOW_ALLOW_PRIVATE_BASE_URLS", False))


# --- addresses ----------------------------------------------------------------------------


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """(the IPv4 address, the form's name) that an IPv6 address carries, or None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-translated"
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip in IPV4_COMPATIBLE and int(ip) > 1:  # not :: or ::1, which have reasons of their own
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-compatible"
    return None


def refusal(ip: IPAddress, allow_private: bool) -> str | None:
    """Why `ip` may not be dialled ("a link-local address"…), or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))  # the zone id does not change what the address is
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for reason, networks in REFUSED_RANGES:
        if any(ip in net for net in networks if net.version == ip.version):
            return reason
    if isinstance(ip, ipaddress.IPv6Address):
        teredo = ip.teredo
        inner = embedded_ipv4(ip)
        if teredo is not None:
            found = next(((v4, r) for v4 in teredo if (r := refusal(v4, allow_private))), None)
            return f"a Teredo address carrying {found[0]}, {found[1]}" if found else None
        if inner is not None:
            v4, form = inner
            found = refusal(v4, allow_private)
            return f"an {form} IPv6 form of {v4}, {found}" if found else None
    for reason, networks in PRIVATE_RANGES:
        if any(ip in net for net in networks if net.version == ip.version):
            return None if allow_private else f"{reason}, and private base URLs are not allowed on this server"
    if isinstance(ip, ipaddress.IPv6Address) and ip not in GLOBAL_UNICAST_V6:
        return "a reserved address"
    return None


def parse_address(text: str) -> IPAddress | None:
    """The IP address `text` spells (IPv6 with or without brackets and zone id, IPv4 in
    any form inet_aton accepts), or None when it is not an address."""
    text = text.strip().rstrip(".") if ":" not in text else text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        text = text.replace("%25", "%").split("%", 1)[0]
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return legacy_ipv4(text)


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of a dotted host in decimal, octal (leading 0) or hex (0x)
    parts, one to four of them (the last fills the remaining bytes), as inet_aton and
    the WHATWG URL parser read it; None when `host` is not such a number."""
    parts = host.lower().split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if part.startswith("0x"):
            digits, base = part[2:] or "0", 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        if not digits or not all(c in "0123456789abcdef"[:base] for c in digits):
            return None
        numbers.append(int(digits, base))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, n in enumerate(head):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def check_address(address: str, allow_private: bool | None = None) -> IPAddress:
    """The address, when it may be dialled. Raises EgressRefused otherwise (also for
    text that is not an IP address: a resolver answers addresses, nothing else)."""
    allow = private_allowed() if allow_private is None else allow_private
    ip = parse_address(address)
    if ip is None:
        raise EgressRefused(address, "not an IP address")
    reason = refusal(ip, allow)
    if reason:
        raise EgressRefused(str(ip), reason)
    return ip


def lookup(host: str, port: int, family: int = socket.AF_UNSPEC, flags: int = 0) -> list[tuple[int, str, int]]:
    """(family, address, port) for every answer getaddrinfo gives `host` (blocking).

    The one lookup both checks use (the connector runs it in a thread), so a test stub
    of this function sees save time and connect time alike."""
    answers = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM, flags=flags)
    found = []
    for fam, _type, _proto, _name, sockaddr in answers:
        address = str(sockaddr[0])
        if fam == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]:
            address = f"{address.split('%', 1)[0]}%{sockaddr[3]}"
        found.append((fam, address, int(sockaddr[1])))
    return found


# --- URLs ---------------------------------------------------------------------------------


def _invalid(message: str) -> InvalidConfig:
    return InvalidConfig(f"base_url: {message}", {"field": "base_url"})


def _host_name(host: str) -> str:
    """A lower-case DNS name without its trailing dot; raises InvalidConfig when it is not one."""
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if not name or len(name) > 253 or not all(HOST_LABEL_RE.match(label) for label in labels):
        raise _invalid("the host is not a valid host name or IP address")
    last = labels[-1]
    if last.isdigit() or (last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:])):
        # It ends in a number, so resolvers read it as an IPv4 address; it is not a valid one.
        raise _invalid("the host is not a valid IP address")
    return name


def _refuse_address(ip: IPAddress, allow: bool, spelled: str) -> None:
    reason = refusal(ip, allow)
    if reason:
        shown = str(ip) if spelled.strip("[]").lower() == str(ip) else f"{spelled} ({ip})"
        raise _invalid(f"{shown} is {reason}.")


def resolve_once(host: str, port: int, timeout: float = RESOLVE_TIMEOUT_SECONDS) -> list[str]:
    """The addresses `host` resolves to now, or [] when it does not (or not in time)."""
    future = _resolver_pool.submit(lookup, host, port)
    try:
        return [address for _family, address, _port in future.result(timeout=timeout)]
    except (OSError, UnicodeError, FutureTimeout):
        return []


def check_base_url(url: str, *, resolve: bool = True, allow_private: bool | None = None) -> str:
    """The normalised base URL (scheme and host lower-cased, numeric hosts in canonical
    form, no trailing slash). Raises InvalidConfig (details.field "base_url") naming
    what is refused. With `resolve`, a host name is resolved once and refused when any
    address it resolves to is."""
    allow = private_allowed() if allow_private is None else allow_private
    if not isinstance(url, str) or not url:
        raise _invalid("must be an http:// or https:// URL")
    if len(url) > MAX_URL_LENGTH or not URL_CHARS_RE.match(url) or "\\" in url:
        raise _invalid("must be a plain ASCII URL without spaces or backslashes")
    if "?" in url or "#" in url:
        raise _invalid("must not contain '?' or '#': the adapter appends its own path")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _invalid("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.netloc.strip("/"):
        raise _invalid("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise _invalid("must not contain credentials; use api_key or secret_ref")
    if port == 0:
        raise _invalid("the port must be between 1 and 65535")
    raw_host = (
        parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") and ":" in parts.netloc else parts.netloc
    )
    if raw_host.startswith("["):
        ip = parse_address(raw_host)
        if not isinstance(ip, ipaddress.IPv6Address) or not raw_host.endswith("]"):
            raise _invalid("the host is not a valid IPv6 address")
        _refuse_address(ip, allow, raw_host)
        host = f"[{ip}]"
    elif (ip4 := legacy_ipv4(raw_host.rstrip(".")) if raw_host.rstrip(".") else None) is not None:
        _refuse_address(ip4, allow, raw_host)
        host = str(ip4)
    else:
        host = _host_name(raw_host)
        if host in METADATA_NAMES:
            raise _invalid(f"{host} is a cloud metadata service.")
        if host == "localhost" or host.endswith(".localhost"):
            _refuse_address(ipaddress.IPv4Address("127.0.0.1"), allow, host)
        if resolve:
            for address in resolve_once(host, port or DEFAULT_PORTS[scheme]):
                resolved = parse_address(address)
                reason = refusal(resolved, allow) if resolved else "not an IP address"
                if reason:
                    raise _invalid(f"{host} resolves to {resolved or address}, {reason}.")
    netloc = f"{host}:{port}" if port is not None else host
    return f"{scheme}://{netloc}{parts.path}".rstrip("/")


# --- Bedrock ------------------------------------------------------------------------------

BEDROCK_HOST_RE = re.compile(
    r"^(?:bedrock-runtime(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?"
    r"|[a-z0-9-]+(?:\.[a-z0-9-]+)*\.vpce\.amazonaws\.com(?:\.cn)?)$"
)


def check_bedrock_endpoint(url: str) -> str:
    """`url` (already through check_base_url) when it is an AWS Bedrock runtime
    endpoint: https://bedrock-runtime.<region>.amazonaws.com or a VPC endpoint
    https://….vpce.amazonaws.com, with no path. Raises InvalidConfig otherwise: a
    Bedrock override elsewhere would receive SigV4-signed requests."""
    parts = urlsplit(url)
    endpoint = parts.scheme == "https" and parts.port in (None, 443) and parts.path in ("", "/")
    if not endpoint or not BEDROCK_HOST_RE.match(parts.hostname or ""):
        raise _invalid(
            "a Bedrock override must be https://bedrock-runtime.<region>.amazonaws.com or a VPC endpoint"
            " (https://….vpce.amazonaws.com), without a path"
        )
    return url
