"""The outbound address rule: where a URL that an organization key set may make this service connect.

An organization's staff can set an agent's `whatsapp.serverUrl`, and the service then calls it
(test-connection, set-webhook, QR pairing, every reply's sendText). Left open, that is server-side
request forgery: a tenant could point it at `http://127.0.0.1:6379`, the cloud metadata address or a
private network and use our error messages as a read-back channel. So such a URL may only reach
**public unicast** addresses, unless the operator listed the host, IP or network in
`LUMINAI_EVOLUTION_ALLOWED_HOSTS`.

The rule is applied twice, by the same `AddressPolicy`:
- when the URL is saved (`check_url`: a 422 naming the field and the reason), and
- at every connection (`GuardedTransport`): the host is resolved once, every address it resolves to is
  checked, and the request goes to the checked address itself (Host header and TLS server name keep the
  name), so a DNS answer that changes between check and connect cannot slip past; redirects are never
  followed.

Addresses are classified with the standard library's `ipaddress`; numeric spellings of IPv4 (`2130706433`,
`0x7f000001`, `127.1`, `0177.0.0.1`) are read by the C library's `inet_aton`, the same reader the system's
resolver uses, so a spelling means here what it would mean to a connection. The operator's own agents
(`LUMINAI_ADMIN_TOKEN`) are trusted and use an unguarded client.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from luminai_actors.errors import ConfigError, LuminaiError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) -> the addresses (as text) a connection to that name could reach; raises OSError when none."""

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class AddressRefused(LuminaiError):
    """A URL would reach an address the outbound address rule refuses; `reason` says why, for the tenant."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (A and AAAA), in its order, without duplicates."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in answers))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still routable)
        return ipaddress.IPv4Address(int(address))
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why address is not public unicast (e.g. "loopback"), or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "an IPv6 address with a zone"
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a connection to a.b.c.d
            inner = refusal_reason(address.ipv4_mapped)
            return f"an IPv6 form of {address.ipv4_mapped}, which is {inner}" if inner else None
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal_reason(embedded)
            if inner is not None:
                return f"an IPv6 form of {embedded}, which is {inner}"
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "shared address space (CGNAT)"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "not a public unicast address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def literal_address(host: str) -> IPAddress | None:
    """The address host spells, in any notation a connection would accept, or None when host is a name."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if ":" in bare or not bare or bare[-1] == "." or any(ch.isspace() for ch in bare):
        return None
    try:  # decimal, hex, octal and short forms of IPv4, read as the resolver reads them
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def _normal_name(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True)
class AddressPolicy:
    """The rule, with the operator's exceptions (`LUMINAI_EVOLUTION_ALLOWED_HOSTS`) and a resolver seam."""

    allowed_names: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_entries(cls, entries: Iterable[str], resolver: Resolver = system_resolver) -> AddressPolicy:
        """Entries are hostnames, IPs or CIDRs; anything else raises ConfigError naming the entry."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _normal_name(entry)
            if not name or "/" in name or ":" in name or any(ch.isspace() for ch in name):
                raise ConfigError(f"LUMINAI_EVOLUTION_ALLOWED_HOSTS: {raw!r} is not a hostname, IP or CIDR")
            literal = literal_address(name)
            if literal is not None:
                networks.append(ipaddress.ip_network(literal))
            else:
                names.add(name)
        return cls(frozenset(names), tuple(networks), resolver)

    def with_resolver(self, resolver: Resolver) -> AddressPolicy:
        return AddressPolicy(self.allowed_names, self.allowed_networks, resolver)

    def _allowed_address(self, address: IPAddress) -> bool:
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(candidate in network for candidate in candidates for network in self.allowed_networks)

    def check_address(self, address: IPAddress, *, named: str | None = None) -> None:
        if self._allowed_address(address):
            return
        reason = refusal_reason(address)
        if reason is not None:
            via = f"{named!r} resolves to {address}" if named else f"{address}"
            raise AddressRefused(
                f"{via} is {reason}; only public addresses are allowed "
                "(the operator can allow a host in LUMINAI_EVOLUTION_ALLOWED_HOSTS)"
            )

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The checked addresses a connection to host:port may use (first is tried); AddressRefused if any
        address host resolves to is refused, or host resolves to nothing."""
        name = _normal_name(host)
        literal = literal_address(name)
        if literal is not None:
            self.check_address(literal)
            return [literal]
        if not name:
            raise AddressRefused("the URL has no host")
        if name not in self.allowed_names and (name == "localhost" or name.endswith(".localhost")):
            raise AddressRefused(
                f"{name!r} is loopback; only public addresses are allowed "
                "(the operator can allow a host in LUMINAI_EVOLUTION_ALLOWED_HOSTS)"
            )
        try:
            answers = list(self.resolver(name, port))
        except (OSError, UnicodeError) as exc:
            raise AddressRefused(f"{name!r} cannot be resolved") from exc
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                addresses.append(ipaddress.ip_address(answer))
            except ValueError as exc:
                raise AddressRefused(f"{name!r} resolves to {answer!r}, which is not an address") from exc
        if not addresses:
            raise AddressRefused(f"{name!r} cannot be resolved")
        if name not in self.allowed_names:
            for address in addresses:  # every answer: a name must not reach a refused address on a retry
                self.check_address(address, named=name)
        return addresses

    def check_url(self, url: str) -> None:
        """AddressRefused unless url is http(s) and its host may be reached."""
        parsed = http_url(url)
        self.resolve(parsed.host, parsed.port or _DEFAULT_PORTS[parsed.scheme])


def http_url(url: str) -> httpx.URL:
    """url parsed; AddressRefused unless it is an http(s) URL with a host (the operator's URLs too)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise AddressRefused(f"is not a valid URL ({exc})") from exc
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise AddressRefused("must be an http(s) URL with a host")
    return parsed


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that resolves once, checks, and connects to the checked address.

    The request's URL host is replaced by the checked address; the Host header (set by httpx when the request
    was built) and, for https, the TLS server name (`sni_hostname`) keep the original name, so the server and
    its certificate are checked against the name the tenant gave.
    """

    def __init__(self, policy: AddressPolicy, inner: httpx.BaseTransport | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise AddressRefused(f"scheme {url.scheme!r} is not http(s)")
        address = self._policy.resolve(url.host, url.port or _DEFAULT_PORTS[url.scheme])[0]
        if url.host != str(address):
            if url.scheme == "https" and literal_address(url.host) is None:
                request.extensions = {**request.extensions, "sni_hostname": _normal_name(url.host)}
            request.url = url.copy_with(host=str(address))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def guarded_client(policy: AddressPolicy, *, timeout: float) -> httpx.Client:
    """An httpx client for URLs a tenant set: the rule at every connection, no redirects followed."""
    return httpx.Client(
        transport=GuardedTransport(policy),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment: the connection goes to the address checked
    )
