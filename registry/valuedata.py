"""Typed handle value data (RFC 3651 section 3.2) and its HANDLE.NET JSON forms. Pure functions, no I/O.

Binary layouts follow HANDLE.NET ``Encoder`` / ``Util`` (all integers big-endian; a "blob" is a 4-byte
length followed by that many bytes, a "string" is a UTF-8 blob; read and written with :mod:`registry.wire`):

- HS_ADMIN (``encodeAdminRecord``): perms u16, admin handle string, admin index u32. Records written by
  HANDLE.NET 7.3 and earlier carry two extra zero bytes at the end ("legacyByteLength").
- HS_VLIST (``encodeValueReferenceList``): count u32, then per reference: handle string, index u32.
- HS_SITE (``encodeSiteInfoRecord``, RFC 3651 section 3.2.2): see :func:`encode_site`.
- HS_PUBKEY (``Util.getBytesFromPublicKey``): key type string, flags u16 (0), then the key numbers as
  blobs holding Java ``BigInteger.toByteArray()`` (two's complement, so a leading zero byte when the top
  bit is set). RSA: ``"RSA_PUB_KEY"``, exponent, modulus. DSA: ``"DSA_PUB_KEY"``, q, p, g, y.
  HANDLE.NET defines no Ed25519 encoding; idnode uses ``"Ed25519"``, flags 0, then the 32 raw public
  key bytes as one blob.

The JSON shapes are those of HANDLE.NET 9's ``GsonUtility`` (``{"format": …, "value": …}``). Client input
that does not fit raises :class:`registry.errors.InvalidValue` and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from registry.errors import InvalidValue
from registry.inputs import as_uint
from registry.model import MAX_INDEX, Reference
from registry.wire import Reader, blob, utf8

__all__ = [
    "ADD_ADMIN",
    "ADD_DERIVED_PREFIX",
    "ADD_HANDLE",
    "ADD_VALUE",
    "ALL_PERMS",
    "DELETE_DERIVED_PREFIX",
    "DELETE_HANDLE",
    "HASH_BY_ALL",
    "HASH_BY_PREFIX",
    "HASH_BY_SUFFIX",
    "IF_ADMIN",
    "IF_ADMIN_AND_QUERY",
    "IF_OUT_OF_SERVICE",
    "IF_QUERY",
    "KEY_TYPE_DSA",
    "KEY_TYPE_ED25519",
    "KEY_TYPE_RSA",
    "LIST_HANDLES",
    "MODIFY_ADMIN",
    "MODIFY_VALUE",
    "PROTO_HTTP",
    "PROTO_HTTPS",
    "PROTO_TCP",
    "PROTO_UDP",
    "READ_VALUE",
    "REMOVE_ADMIN",
    "REMOVE_VALUE",
    "SITE_TYPES",
    "AdminRef",
    "Interface",
    "PublicKey",
    "ServerInfo",
    "SiteInfo",
    "admin_from_json",
    "admin_to_json",
    "data_from_json",
    "data_to_json",
    "decode_admin",
    "decode_public_key",
    "decode_site",
    "decode_vlist",
    "encode_admin",
    "encode_public_key",
    "encode_site",
    "encode_vlist",
    "looks_like_binary",
    "perm_name",
    "perms_from_string",
    "perms_to_string",
    "public_key_from_jwk",
    "public_key_to_jwk",
    "site_from_json",
    "site_info_from_json",
    "site_info_to_json",
    "site_to_json",
    "vlist_from_json",
    "vlist_to_json",
]

# HS_ADMIN permission bits (HANDLE.NET Encoder.PERM_* / AdminRecord indexes 0..11).
ADD_HANDLE = 0x0001
DELETE_HANDLE = 0x0002
ADD_DERIVED_PREFIX = 0x0004
DELETE_DERIVED_PREFIX = 0x0008
MODIFY_VALUE = 0x0010
REMOVE_VALUE = 0x0020
ADD_VALUE = 0x0040
MODIFY_ADMIN = 0x0080
REMOVE_ADMIN = 0x0100
ADD_ADMIN = 0x0200
READ_VALUE = 0x0400
LIST_HANDLES = 0x0800
ALL_PERMS = 0x0FFF

# HS_SITE hash options (SiteInfo.HASH_TYPE_*), interface service types and protocols (Interface.ST_*/SP_*).
HASH_BY_PREFIX = 0
HASH_BY_SUFFIX = 1
HASH_BY_ALL = 2
IF_OUT_OF_SERVICE = 0
IF_ADMIN = 1
IF_QUERY = 2
IF_ADMIN_AND_QUERY = 3
PROTO_UDP = 0
PROTO_TCP = 1
PROTO_HTTP = 2
PROTO_HTTPS = 3
_PROTO_NAMES = {PROTO_UDP: "UDP", PROTO_TCP: "TCP", PROTO_HTTP: "HTTP", PROTO_HTTPS: "HTTPS"}
_PROTO_BY_NAME = {v: k for k, v in _PROTO_NAMES.items()}
_PRIMARY_SITE = 0x80
_MULTI_PRIMARY = 0x40

KEY_TYPE_RSA = "RSA_PUB_KEY"
KEY_TYPE_DSA = "DSA_PUB_KEY"
KEY_TYPE_ED25519 = "Ed25519"  # idnode's own: HANDLE.NET has no Ed25519 HS_PUBKEY encoding

# Types whose data is a site info record (Common.SITE_INFO_INCL_PREFIX_TYPES).
SITE_TYPES = frozenset({"HS_SITE", "HS_SITE.6", "HS_SITE.PREFIX", "HS_NA_DELEGATE"})

_MAX_RSA_BITS = 16384
_MAX_U16 = 0xFFFF

PublicKey = rsa.RSAPublicKey | dsa.DSAPublicKey | ed25519.Ed25519PublicKey


# ---------------------------------------------------------------------------------------------- binary


def _check_range(value: int, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidValue(f"{what} must be an integer from {lo} to {hi}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- HS_ADMIN


@dataclass(frozen=True, slots=True)
class AdminRef:
    """An HS_ADMIN record: who (``index:handle``) may do what (``perms``, 12 bits)."""

    handle: str
    index: int
    perms: int
    legacy: bool = False  # two trailing zero bytes, as HANDLE.NET <= 7.3 wrote them

    def allows(self, perm: int) -> bool:
        return self.perms & perm == perm


def encode_admin(handle: str, index: int, perms: int, *, legacy: bool = False) -> bytes:
    """HS_ADMIN data bytes: perms u16, admin handle string, admin index u32."""
    if not isinstance(handle, str) or not handle:
        raise InvalidValue("HS_ADMIN: admin handle must be a non-empty string")
    _check_range(index, 0, MAX_INDEX, "HS_ADMIN: admin index")
    _check_range(perms, 0, ALL_PERMS, "HS_ADMIN: permissions")
    out = struct.pack(">H", perms) + blob(utf8(handle, "HS_ADMIN: admin handle")) + struct.pack(">I", index)
    return out + b"\0\0" if legacy else out


def decode_admin(data: bytes) -> AdminRef:
    """Parse HS_ADMIN data; bits above the 12 defined permissions are dropped (as HANDLE.NET does)."""
    r = Reader(data, "HS_ADMIN data")
    perms = r.u16() & ALL_PERMS
    handle = r.text("admin handle")
    index = r.u32()
    legacy = r.buf[r.pos :] == b"\0\0"
    if legacy:
        r.take(2)
    r.done()
    if not handle:
        raise InvalidValue("HS_ADMIN data: empty admin handle")
    return AdminRef(handle, index, perms, legacy)


_PERM_NAMES = (
    "ADD_HANDLE",
    "DELETE_HANDLE",
    "ADD_DERIVED_PREFIX",
    "DELETE_DERIVED_PREFIX",
    "MODIFY_VALUE",
    "REMOVE_VALUE",
    "ADD_VALUE",
    "MODIFY_ADMIN",
    "REMOVE_ADMIN",
    "ADD_ADMIN",
    "READ_VALUE",
    "LIST_HANDLES",
)


def perm_name(perms: int) -> str:
    """``ADD_VALUE`` / ``ADD_VALUE|REMOVE_VALUE`` / ``ALL_PERMS`` / ``none``, for messages."""
    if perms & ALL_PERMS == ALL_PERMS:
        return "ALL_PERMS"
    names = [name for i, name in enumerate(_PERM_NAMES) if perms & (1 << i)]
    return "|".join(names) or "none"


def perms_to_string(perms: int) -> str:
    """``0x0FFE`` → ``"111111111110"``: LIST_HANDLES on the left … ADD_HANDLE on the right."""
    _check_range(perms, 0, ALL_PERMS, "HS_ADMIN permissions")
    return format(perms, "012b")


_PERMS_RE = re.compile(r"[01]{1,12}")


def perms_from_string(text: str) -> int:
    """Inverse of :func:`perms_to_string`. As in HANDLE.NET, shorter strings are right-aligned (the last
    character is ADD_HANDLE) and ``"*"`` means all permissions."""
    if not isinstance(text, str):
        raise InvalidValue(f"HS_ADMIN permissions must be a string of 0/1, got {type(text).__name__}")
    if text == "*":
        return ALL_PERMS
    if not _PERMS_RE.fullmatch(text):
        raise InvalidValue(f"HS_ADMIN permissions must be 1 to 12 characters 0/1 (or '*'), got {text!r}")
    return int(text, 2)


def admin_to_json(data: bytes) -> dict[str, Any]:
    """``{"handle", "index", "permissions": "011111111111"}`` (GsonUtility.AdminRecordGsonTypeAdapter)."""
    ref = decode_admin(data)
    out: dict[str, Any] = {
        "handle": ref.handle,
        "index": ref.index,
        "permissions": perms_to_string(ref.perms),
    }
    if ref.legacy:
        out["legacyByteLength"] = True
    return out


def admin_from_json(obj: object) -> bytes:
    """HS_ADMIN bytes from its JSON form. ``index`` may be a string (pyhandle sends ``"200"``);
    ``permissions`` may be the 0/1 string, ``"*"``, a boolean (all/none) or an integer bit mask."""
    where = "HS_ADMIN value"
    if not isinstance(obj, Mapping):
        raise InvalidValue(f"{where} must be an object with handle, index and permissions")
    handle = obj.get("handle")
    if not isinstance(handle, str) or not handle:
        raise InvalidValue(f"{where}: 'handle' must be a non-empty string")
    if "index" not in obj:
        raise InvalidValue(f"{where}: 'index' is required")
    index = _as_int(obj["index"], 0, MAX_INDEX, f"{where}: 'index'")
    raw = obj.get("permissions")
    if raw is None:
        perms = 0
    elif isinstance(raw, bool):
        perms = ALL_PERMS if raw else 0
    elif isinstance(raw, int):
        perms = _check_range(raw, 0, ALL_PERMS, f"{where}: 'permissions'")
    elif isinstance(raw, str):
        perms = perms_from_string(raw)
    else:
        raise InvalidValue(f"{where}: 'permissions' must be a string like \"011111111111\", got {raw!r}"[:200])
    legacy = obj.get("legacyByteLength", False) is True
    return encode_admin(handle, index, perms, legacy=legacy)


# ---------------------------------------------------------------------------------------------- HS_VLIST


def encode_vlist(refs: Iterable[Reference]) -> bytes:
    """HS_VLIST data: count u32, then each reference as handle string + index u32."""
    items = list(refs)
    parts = [struct.pack(">I", len(items))]
    for i, ref in enumerate(items):
        if not isinstance(ref.handle, str) or not ref.handle:
            raise InvalidValue(f"HS_VLIST reference {i}: handle must be a non-empty string")
        _check_range(ref.index, 0, MAX_INDEX, f"HS_VLIST reference {i}: index")
        parts.append(blob(utf8(ref.handle, f"HS_VLIST reference {i}: handle")))
        parts.append(struct.pack(">I", ref.index))
    return b"".join(parts)


def decode_vlist(data: bytes) -> list[Reference]:
    r = Reader(data, "HS_VLIST data")
    n = r.count("reference", 8)
    refs = [Reference(r.text(f"reference {i} handle"), r.u32()) for i in range(n)]
    r.done()
    return refs


def vlist_to_json(data: bytes) -> list[dict[str, Any]]:
    return [{"handle": ref.handle, "index": ref.index} for ref in decode_vlist(data)]


def vlist_from_json(obj: object) -> bytes:
    if not isinstance(obj, list):
        raise InvalidValue("HS_VLIST value must be an array of {handle, index}")
    refs = []
    for i, item in enumerate(obj):
        where = f"HS_VLIST value[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidValue(f"{where} must be an object with handle and index")
        handle = item.get("handle")
        if not isinstance(handle, str) or not handle:
            raise InvalidValue(f"{where}: 'handle' must be a non-empty string")
        if "index" not in item:
            raise InvalidValue(f"{where}: 'index' is required")
        refs.append(Reference(handle, _as_int(item["index"], 0, MAX_INDEX, f"{where}: 'index'")))
    return encode_vlist(refs)


# ---------------------------------------------------------------------------------------------- HS_SITE

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Interface:
    """One service interface of a server: ``type`` is IF_*, ``protocol`` PROTO_* (other values kept)."""

    type: int
    protocol: int
    port: int

    @property
    def query(self) -> bool:
        return bool(self.type & IF_QUERY)

    @property
    def admin(self) -> bool:
        return bool(self.type & IF_ADMIN)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A server of a site. IPv4 addresses are stored as 12 zero bytes + 4 (ServerInfo.isIPv4)."""

    server_id: int
    address: IPAddress
    public_key: bytes = b""
    interfaces: tuple[Interface, ...] = ()


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """An HS_SITE record (RFC 3651 section 3.2.2)."""

    version: int = 1  # data format version
    protocol_major: int = 2
    protocol_minor: int = 10
    serial: int = 0
    primary: bool = False
    multi_primary: bool = False
    hash_option: int = HASH_BY_ALL
    hash_filter: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    servers: tuple[ServerInfo, ...] = ()


def _pack_address(addr: IPAddress) -> bytes:
    if isinstance(addr, ipaddress.IPv4Address):
        return b"\0" * 12 + addr.packed
    if isinstance(addr, ipaddress.IPv6Address):
        return addr.packed
    raise InvalidValue(f"HS_SITE: server address must be an ipaddress object, got {type(addr).__name__}")


def _unpack_address(raw: bytes) -> IPAddress:
    if raw[:12] == b"\0" * 12:
        return ipaddress.IPv4Address(raw[12:])
    return ipaddress.IPv6Address(raw)


def encode_site(site: SiteInfo) -> bytes:
    """HS_SITE data: version u16, protocol major u8 + minor u8, serial u16, flags u8 (0x80 primary,
    0x40 multi-primary), hash option u8, hash filter string, attributes (count u32, name and value
    strings), servers (count u32; id u32, 16-byte address, public key blob, interfaces (count u32; type
    u8, protocol u8, port u32))."""
    w = "HS_SITE"
    parts = [
        struct.pack(
            ">HBBHBB",
            _check_range(site.version, 0, _MAX_U16, f"{w}: version"),
            _check_range(site.protocol_major, 0, 255, f"{w}: protocol major version"),
            _check_range(site.protocol_minor, 0, 255, f"{w}: protocol minor version"),
            _check_range(site.serial, 0, _MAX_U16, f"{w}: serial number"),
            (_PRIMARY_SITE if site.primary else 0) | (_MULTI_PRIMARY if site.multi_primary else 0),
            _check_range(site.hash_option, 0, 255, f"{w}: hash option"),
        ),
        blob(utf8(site.hash_filter, f"{w}: hash filter")),
        struct.pack(">I", len(site.attributes)),
    ]
    for name, value in site.attributes:
        parts.append(blob(utf8(name, f"{w}: attribute name")))
        parts.append(blob(utf8(value, f"{w}: attribute value")))
    parts.append(struct.pack(">I", len(site.servers)))
    for s in site.servers:
        parts.append(struct.pack(">I", _check_range(s.server_id, 0, 0xFFFFFFFF, f"{w}: server id")))
        parts.append(_pack_address(s.address))
        parts.append(blob(bytes(s.public_key)))
        parts.append(struct.pack(">I", len(s.interfaces)))
        for itf in s.interfaces:
            parts.append(
                struct.pack(
                    ">BBI",
                    _check_range(itf.type, 0, 255, f"{w}: interface type"),
                    _check_range(itf.protocol, 0, 255, f"{w}: interface protocol"),
                    _check_range(itf.port, 0, 0xFFFFFFFF, f"{w}: interface port"),
                )
            )
    return b"".join(parts)


def decode_site(data: bytes) -> SiteInfo:
    """Parse HS_SITE data (trailing bytes are an error, as in HANDLE.NET decodeSiteInfoRecord)."""
    r = Reader(data, "HS_SITE data")
    version = r.u16()
    major, minor = r.u8(), r.u8()
    serial = r.u16()
    flags = r.u8()
    hash_option = r.u8()
    hash_filter = r.text("hash filter")
    attributes = tuple(
        (r.text(f"attribute {i} name"), r.text(f"attribute {i} value")) for i in range(r.count("attribute", 8))
    )
    servers = []
    for _ in range(r.count("server", 28)):
        server_id = r.u32()
        address = _unpack_address(r.take(16))
        public_key = r.blob()
        interfaces = tuple(Interface(r.u8(), r.u8(), r.u32()) for _ in range(r.count("interface", 6)))
        servers.append(ServerInfo(server_id, address, public_key, interfaces))
    r.done()
    return SiteInfo(
        version=version,
        protocol_major=major,
        protocol_minor=minor,
        serial=serial,
        primary=bool(flags & _PRIMARY_SITE),
        multi_primary=bool(flags & _MULTI_PRIMARY),
        hash_option=hash_option,
        hash_filter=hash_filter,
        attributes=attributes,
        servers=tuple(servers),
    )


def site_info_to_json(site: SiteInfo) -> dict[str, Any]:
    """The ``"format":"site"`` value (GsonUtility.SiteInfoGsonTypeAdapter and friends)."""
    out: dict[str, Any] = {
        "version": site.version,
        "protocolVersion": f"{site.protocol_major}.{site.protocol_minor}",
        "serialNumber": site.serial,
        "primarySite": site.primary,
        "multiPrimary": site.multi_primary,
    }
    if site.hash_option != HASH_BY_ALL:
        out["hashOption"] = site.hash_option
    if site.hash_filter:
        out["hashFilter"] = site.hash_filter
    out["attributes"] = [{"name": n, "value": v} for n, v in site.attributes]
    out["servers"] = [_server_to_json(s) for s in site.servers]
    return out


def _server_to_json(server: ServerInfo) -> dict[str, Any]:
    try:
        key: dict[str, Any] = {"format": "key", "value": public_key_to_jwk(server.public_key)}
    except InvalidValue:
        key = {"format": "base64", "value": base64.b64encode(server.public_key).decode("ascii")}
    return {
        "serverId": server.server_id,
        "address": str(server.address),
        "publicKey": key,
        "interfaces": [
            {
                "query": itf.query,
                "admin": itf.admin,
                "protocol": _PROTO_NAMES.get(itf.protocol, itf.protocol),
                "port": itf.port,
            }
            for itf in server.interfaces
        ],
    }


def site_to_json(data: bytes) -> dict[str, Any]:
    return site_info_to_json(decode_site(data))


def _legacy_lower(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """Old HANDLE.NET JSON used capitalised keys (``ServerList``, ``Address``, ``Port``)."""
    if "ServerList" in obj or "Address" in obj or "Port" in obj:
        return {(k[:1].lower() + k[1:] if isinstance(k, str) else k): v for k, v in obj.items()}, True
    return obj, False


def site_info_from_json(obj: object) -> SiteInfo:
    """Parse the ``"format":"site"`` value. Missing fields take HANDLE.NET's defaults."""
    w = "HS_SITE value"
    if not isinstance(obj, Mapping):
        raise InvalidValue(f"{w} must be an object")
    obj, _ = _legacy_lower(obj)
    major, minor = 2, 10
    if "protocolVersion" in obj:
        pv = obj["protocolVersion"]
        m = re.fullmatch(r"([0-9]{1,3})\.([0-9]{1,3})", pv) if isinstance(pv, str) else None
        if not m or int(m[1]) > 255 or int(m[2]) > 255:
            raise InvalidValue(f"{w}: 'protocolVersion' must look like \"2.10\", got {pv!r}")
        major, minor = int(m[1]), int(m[2])
    servers_raw = obj.get("servers", obj.get("serverList"))
    if servers_raw is None:
        servers_raw = []
    if not isinstance(servers_raw, list):
        raise InvalidValue(f"{w}: 'servers' must be an array")
    hash_filter = obj.get("hashFilter", "")
    if not isinstance(hash_filter, str):
        raise InvalidValue(f"{w}: 'hashFilter' must be a string")
    return SiteInfo(
        version=_as_int(obj.get("version", 1), 0, _MAX_U16, f"{w}: 'version'"),
        protocol_major=major,
        protocol_minor=minor,
        serial=_as_int(obj.get("serialNumber", 0), 0, _MAX_U16, f"{w}: 'serialNumber'"),
        primary=_as_bool(obj.get("primarySite", False), f"{w}: 'primarySite'"),
        multi_primary=_as_bool(obj.get("multiPrimary", False), f"{w}: 'multiPrimary'"),
        hash_option=_as_int(obj.get("hashOption", HASH_BY_ALL), 0, 255, f"{w}: 'hashOption'"),
        hash_filter=hash_filter,
        attributes=_attributes_from_json(obj.get("attributes", []), f"{w}: 'attributes'"),
        servers=tuple(_server_from_json(s, f"{w}: servers[{i}]") for i, s in enumerate(servers_raw)),
    )


def _attributes_from_json(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            name = item.get("name") if isinstance(item, Mapping) else None
            value = item.get("value") if isinstance(item, Mapping) else None
            if not isinstance(name, str) or not isinstance(value, str):
                raise InvalidValue(f"{where}[{i}] must be an object with string 'name' and 'value'")
            out.append((name, value))
    elif isinstance(raw, Mapping):  # {"name": "value" | ["value", …]}
        for name, value in raw.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                if not isinstance(v, str):
                    raise InvalidValue(f"{where}: value of {name!r} must be a string")
                out.append((str(name), v))
    else:
        raise InvalidValue(f"{where} must be an array of {{name, value}}")
    return tuple(out)


def _server_from_json(raw: object, where: str) -> ServerInfo:
    if not isinstance(raw, Mapping):
        raise InvalidValue(f"{where} must be an object")
    obj, legacy = _legacy_lower(raw)
    addr_text = obj.get("address")
    if not isinstance(addr_text, str):
        raise InvalidValue(f"{where}: 'address' must be an IP address string")
    try:
        address: IPAddress = ipaddress.ip_address(addr_text.strip())
    except ValueError:
        raise InvalidValue(f"{where}: 'address' is not an IP address: {addr_text!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # Java's InetAddress.getByName does the same
    key_raw = obj.get("publicKey")
    if key_raw is None:
        public_key = b""
    elif legacy and isinstance(key_raw, str):
        public_key = _hex_decode(key_raw, f"{where}: 'publicKey'")
    else:
        public_key = data_from_json("HS_PUBKEY", key_raw, _where=f"{where}: 'publicKey'")
    itfs_raw = obj.get("interfaces", obj.get("interfaceList"))
    if itfs_raw is None:
        itfs_raw = []
    if not isinstance(itfs_raw, list):
        raise InvalidValue(f"{where}: 'interfaces' must be an array")
    return ServerInfo(
        server_id=_as_int(obj.get("serverId", 0), 0, 0xFFFFFFFF, f"{where}: 'serverId'"),
        address=address,
        public_key=public_key,
        interfaces=tuple(_interface_from_json(x, f"{where}: interfaces[{i}]") for i, x in enumerate(itfs_raw)),
    )


def _interface_from_json(raw: object, where: str) -> Interface:
    if not isinstance(raw, Mapping):
        raise InvalidValue(f"{where} must be an object")
    obj, _ = _legacy_lower(raw)
    query = _as_bool(obj.get("query", False), f"{where}: 'query'")
    admin = _as_bool(obj.get("admin", False), f"{where}: 'admin'")
    proto_raw = obj.get("protocol")
    if isinstance(proto_raw, str) and proto_raw in _PROTO_BY_NAME:
        protocol = _PROTO_BY_NAME[proto_raw]
    elif proto_raw is None:
        raise InvalidValue(f"{where}: 'protocol' is required (UDP, TCP, HTTP or HTTPS)")
    else:
        protocol = _as_int(proto_raw, 0, 255, f"{where}: 'protocol' (UDP, TCP, HTTP, HTTPS or a number)")
    if "port" not in obj:
        raise InvalidValue(f"{where}: 'port' is required")
    return Interface(
        type=(IF_QUERY if query else 0) | (IF_ADMIN if admin else 0),
        protocol=protocol,
        port=_as_int(obj["port"], 0, 65535, f"{where}: 'port'"),
    )


def site_from_json(obj: object) -> bytes:
    return encode_site(site_info_from_json(obj))


# ---------------------------------------------------------------------------------------------- HS_PUBKEY


def _java_bigint(n: int) -> bytes:
    """Java ``BigInteger.toByteArray()`` of a non-negative integer."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def _unsigned(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def encode_public_key(key: object) -> bytes:
    """HS_PUBKEY data for a ``cryptography`` RSA, DSA or Ed25519 public key."""
    head = b""
    nums: list[bytes]
    if isinstance(key, rsa.RSAPublicKey):
        pn = key.public_numbers()
        head, nums = blob(KEY_TYPE_RSA.encode()), [_java_bigint(pn.e), _java_bigint(pn.n)]
    elif isinstance(key, dsa.DSAPublicKey):
        dn = key.public_numbers()
        pp = dn.parameter_numbers
        head = blob(KEY_TYPE_DSA.encode())
        nums = [_java_bigint(pp.q), _java_bigint(pp.p), _java_bigint(pp.g), _java_bigint(dn.y)]
    elif isinstance(key, ed25519.Ed25519PublicKey):
        head, nums = blob(KEY_TYPE_ED25519.encode()), [key.public_bytes(Encoding.Raw, PublicFormat.Raw)]
    else:
        raise InvalidValue(f"HS_PUBKEY: unsupported public key type {type(key).__name__}")
    return head + b"\0\0" + b"".join(blob(x) for x in nums)


def decode_public_key(data: bytes) -> PublicKey:
    """Parse HS_PUBKEY data into a ``cryptography`` public key object."""
    r = Reader(data, "HS_PUBKEY data")
    key_type = r.blob()
    r.u16()  # flags: reserved, ignored (as in HANDLE.NET)
    try:
        if key_type == KEY_TYPE_RSA.encode():
            e, n = _uint(r.blob()), _uint(r.blob())
            r.done()
            if n.bit_length() > _MAX_RSA_BITS:
                raise InvalidValue(f"HS_PUBKEY data: RSA modulus longer than {_MAX_RSA_BITS} bits")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if key_type == KEY_TYPE_DSA.encode():
            q, p, g, y = (_uint(r.blob()) for _ in range(4))
            r.done()
            return dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
        if key_type == KEY_TYPE_ED25519.encode():
            raw = r.blob()
            r.done()
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:  # cryptography's own validation (InvalidValue is not a ValueError)
        raise InvalidValue(f"HS_PUBKEY data: invalid key: {exc}") from None
    shown = key_type[:40].decode("utf-8", "replace")
    raise InvalidValue(f"HS_PUBKEY data: unknown key type {shown!r}")


def _uint(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_key_to_jwk(data: bytes) -> dict[str, str]:
    """JWK of HS_PUBKEY data (RSA ``n``/``e``, DSA ``y``/``p``/``q``/``g``, Ed25519 as OKP ``x``)."""
    key = decode_public_key(data)
    if isinstance(key, rsa.RSAPublicKey):
        pn = key.public_numbers()
        return {"kty": "RSA", "n": _b64url(_unsigned(pn.n)), "e": _b64url(_unsigned(pn.e))}
    if isinstance(key, dsa.DSAPublicKey):
        dn = key.public_numbers()
        pp = dn.parameter_numbers
        return {
            "kty": "DSA",
            "y": _b64url(_unsigned(dn.y)),
            "p": _b64url(_unsigned(pp.p)),
            "q": _b64url(_unsigned(pp.q)),
            "g": _b64url(_unsigned(pp.g)),
        }
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(key.public_bytes(Encoding.Raw, PublicFormat.Raw))}


def public_key_from_jwk(jwk: object) -> bytes:
    """HS_PUBKEY data from a JWK (``kty`` RSA, DSA, or OKP with ``crv`` Ed25519)."""
    w = "HS_PUBKEY value"
    if not isinstance(jwk, Mapping):
        raise InvalidValue(f"{w} must be a JWK object")
    kty = jwk.get("kty")
    if not isinstance(kty, str):
        raise InvalidValue(f"{w}: 'kty' must be a string (RSA, DSA or OKP)")

    def num(name: str) -> int:
        return _uint(_b64_decode(jwk.get(name), f"{w}: '{name}'", required=True))

    try:
        kind = kty.upper()
        if kind == "RSA":
            n, e = num("n"), num("e")
            if n.bit_length() > _MAX_RSA_BITS:
                raise InvalidValue(f"{w}: RSA modulus longer than {_MAX_RSA_BITS} bits")
            key: PublicKey = rsa.RSAPublicNumbers(e, n).public_key()
        elif kind == "DSA":
            y, p, q, g = num("y"), num("p"), num("q"), num("g")
            key = dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
        elif kind == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise InvalidValue(f"{w}: only OKP keys with crv Ed25519 are supported, got {jwk.get('crv')!r}")
            key = ed25519.Ed25519PublicKey.from_public_bytes(_b64_decode(jwk.get("x"), f"{w}: 'x'", True))
        else:
            raise InvalidValue(f"{w}: unsupported kty {kty!r} (RSA, DSA or OKP)")
    except ValueError as exc:
        raise InvalidValue(f"{w}: invalid key: {exc}") from None
    return encode_public_key(key)


# ---------------------------------------------------------------------------------------------- generic


def looks_like_binary(data: bytes) -> bool:
    """HANDLE.NET ``Util.looksLikeBinary``: not UTF-8, or a control byte other than 0x09–0x13, or DEL.

    (HANDLE.NET lets 0x09..0x13 pass as "whitespace"; kept for identical output. Its UTF-8 check is a
    little looser than Python's strict decoder, which also rejects encoded surrogates.)
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any((b < 0x20 and not 0x09 <= b <= 0x13) or b == 0x7F for b in data)


def data_to_json(type: str, data: bytes) -> dict[str, Any]:
    """The HANDLE.NET ``data`` object of a value: typed formats for HS_ADMIN/HS_VLIST/HS_SITE/HS_PUBKEY,
    then ``string`` for text, ``base64`` otherwise. Undecodable typed data falls back; never raises."""
    data = bytes(data)
    kind = type.upper() if isinstance(type, str) else ""
    try:
        if kind == "HS_ADMIN":
            return {"format": "admin", "value": admin_to_json(data)}
        if kind == "HS_VLIST":
            return {"format": "vlist", "value": vlist_to_json(data)}
        if kind in SITE_TYPES:
            return {"format": "site", "value": site_to_json(data)}
        if kind == "HS_PUBKEY":
            return {"format": "key", "value": public_key_to_jwk(data)}
    except (InvalidValue, ValueError, TypeError, OverflowError):
        pass  # legacy or damaged typed data: show the bytes as they are
    if not looks_like_binary(data):
        return {"format": "string", "value": data.decode("utf-8")}
    return {"format": "base64", "value": base64.b64encode(data).decode("ascii")}


_FORMATS = ("string", "base64", "hex", "admin", "vlist", "site", "key")


def data_from_json(type: str, data: object, *, _where: str = "data") -> bytes:
    """Value bytes from the HANDLE.NET JSON ``data``: a bare string (UTF-8), or ``{"format", "value"}``.

    As in HANDLE.NET the format, not the value's type, decides the encoding; a mapping with a string
    ``value`` and no ``format`` is text.
    """
    w = _where
    if isinstance(data, str):
        return utf8(data, w)
    if not isinstance(data, Mapping):
        raise InvalidValue(f"{w} must be a string or an object with 'format' and 'value'")
    fmt = data.get("format", "string")
    if not isinstance(fmt, str) or fmt.lower() not in _FORMATS:
        raise InvalidValue(f"{w}: unknown format {fmt!r} (expected one of {', '.join(_FORMATS)})")
    fmt = fmt.lower()
    if "value" not in data:
        raise InvalidValue(f"{w}: 'value' is required")
    value = data["value"]
    if fmt == "string":
        if not isinstance(value, str):
            raise InvalidValue(f"{w}: a 'string' value must be a JSON string")
        return utf8(value, w)
    if fmt == "base64":
        return _b64_decode(value, f"{w}: base64 value", required=False)
    if fmt == "hex":
        if not isinstance(value, str):
            raise InvalidValue(f"{w}: a 'hex' value must be a JSON string")
        return _hex_decode(value, f"{w}: hex value")
    if fmt == "admin":
        return admin_from_json(value)
    if fmt == "vlist":
        return vlist_from_json(value)
    if fmt == "site":
        return site_from_json(value)
    return public_key_from_jwk(value)


# ---------------------------------------------------------------------------------------------- helpers

_B64_RE = re.compile(r"[A-Za-z0-9+/]*")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})*")


def _b64_decode(value: object, where: str, required: bool) -> bytes:
    """Standard or URL-safe base64, padding optional, whitespace ignored."""
    if not isinstance(value, str):
        raise InvalidValue(f"{where} must be a base64 string")
    text = "".join(value.split()).rstrip("=").replace("-", "+").replace("_", "/")
    if not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidValue(f"{where} is not valid base64")
    if required and not text:
        raise InvalidValue(f"{where} must not be empty")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue(f"{where} is not valid base64") from None


def _hex_decode(value: str, where: str) -> bytes:
    text = "".join(value.split())
    if not _HEX_RE.fullmatch(text):
        raise InvalidValue(f"{where} must be an even number of hex digits")
    return bytes.fromhex(text)


def _as_int(value: object, lo: int, hi: int, where: str) -> int:
    """An integer from JSON: a number or a string of ASCII digits (``"200"``), within ``[lo, hi]``."""
    return as_uint(value, where, minimum=lo, maximum=hi, error=InvalidValue)


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidValue(f"{where} must be true or false, got {value!r}"[:200])
