"""QR codes (``GET /api/qr/{handle}``) and label sheets (``GET /api/labels``) on a node with a real store.

Codes are checked by scanning them: a real decoder (zxing-cpp) reads the PNG, the SVG (its path drawn
as modules) and the codes on label sheets rendered to images by PDFium (as a viewer or printer
driver would), and must give back each handle's public URL. Sheets are read as a viewer reads them:
pages, page size, the text on them, the fonts embedded. ``IDNODE_SCREENSHOTS=DIR`` keeps a rendered
sheet of Chinese and ASCII labels there.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pypdfium2 as pdfium
import pytest
import zxingcpp
from aiohttp.test_utils import TestClient
from PIL import Image
from pypdf import PdfReader

from registry.errors import InvalidRequest
from resolver.config import ConfigError, load_config
from resolver.http.public_url import handle_path, handle_url, public_base_url
from resolver.labels.fonts import unicode_font
from resolver.labels.layouts import LAYOUTS
from resolver.labels.qr import QUIET_ZONE
from resolver.labels.routes import LABELS_KEY, SHEETS_AT_ONCE
from resolver.labels.sheet import Label, LabelSheet
from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc

BASE = "http://127.0.0.1:8000"  # the default public_base_url of the test config (host and port)


# ----------------------------------------------------------------------------------------- helpers


@pytest.fixture
def config_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the node under test: none, or a test's (indirect parametrisation)."""
    return dict(getattr(request, "param", {}))


def scan(image: Image.Image) -> list[str]:
    """Every QR code a real decoder finds in ``image``."""
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]


def svg_image(svg: bytes) -> tuple[Image.Image, int]:
    """The modules segno's SVG path draws (``M x y``, then ``h n`` runs and ``m dx dy`` moves, one
    module high), as an image 8 pixels a module; and the SVG's width in user units."""
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    (path,) = root.iter("{http://www.w3.org/2000/svg}path")
    scale = float(re.fullmatch(r"scale\((\d+)\)", path.get("transform", "scale(1)")).group(1))  # type: ignore[union-attr]
    modules = int(int(root.get("width", "0")) / scale)
    image = Image.new("L", (modules, modules), 255)
    x = y = 0.0
    for op, a, b in re.findall(r"([MmhHvV])\s*(-?[\d.]+)(?:[ ,](-?[\d.]+))?", path.get("d", "")):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        elif op == "h":
            for column in range(int(x), int(x + float(a))):
                image.putpixel((column, int(y)), 0)
            x += float(a)
        else:
            raise AssertionError(f"unexpected path command {op}")
    return image.resize((modules * 8, modules * 8), Image.NEAREST), int(root.get("width", "0"))


def pdf_pages(pdf: bytes, dpi: int = 200, *, render: set[int] | None = None) -> list[tuple[Image.Image | None, str]]:
    """Each page rendered (those in ``render``, or all) and its text as a viewer extracts it (line
    breaks dropped; PDFium marks a hyphen ending a line as U+FFFE)."""
    document = pdfium.PdfDocument(pdf)
    try:
        pages: list[tuple[Image.Image | None, str]] = []
        for number, page in enumerate(document):
            text = page.get_textpage().get_text_range().replace("\ufffe", "-")
            image = page.render(scale=dpi / 72).to_pil() if render is None or number in render else None
            pages.append((image, re.sub(r"[\r\n]", "", text)))
        return pages
    finally:
        document.close()


def embedded_fonts(pdf: bytes) -> set[str]:
    """The base names of the fonts whose glyphs the PDF carries."""
    names = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for font in page["/Resources"].get("/Font", {}).values():
            font = font.get_object()
            for descendant in [font, *(d.get_object() for d in font.get("/DescendantFonts", []))]:
                descriptor = descendant.get("/FontDescriptor")
                if descriptor is not None and {"/FontFile", "/FontFile2", "/FontFile3"} & set(descriptor.get_object()):
                    names.add(str(descendant["/BaseFont"]))
    return names


def url_of(handle: str, base: str = BASE) -> str:
    prefix, _, suffix = handle.partition("/")
    return f"{base}/{prefix}/{quote(suffix)}"


async def register(client: TestClient, headers: dict[str, str], handles: list[str], **extra: Any) -> None:
    """One batch: each handle with a URL value (and ``extra`` values by index)."""
    values = [{"index": 1, "type": "URL", "data": "https://trace.example.com/p"}]
    values += [{"index": int(i), "type": t, "data": d} for i, (t, d) in extra.items()]
    body = "".join(json.dumps({"handle": h, "values": values}, ensure_ascii=False) + "\n" for h in handles)
    r = await client.post(
        "/api/handles", data=body.encode(), headers={**headers, "Content-Type": "application/x-ndjson"}
    )
    assert r.status == 201, await r.text()


@pytest.fixture
async def enterprise(client: TestClient, onboard: Callable[..., Any]) -> dict[str, Any]:
    """An enterprise with 30 identifiers SKU-2025-000000 … SKU-2025-000029, registered in that order."""
    e = await onboard()
    e["skus"] = [f"{e['prefix']}/SKU-2025-{i:06d}" for i in range(30)]
    await register(client, e["headers"], e["skus"])
    return e


async def sheet(client: TestClient, headers: dict[str, str], **query: Any) -> bytes:
    r = await client.get("/api/labels", params=query, headers=headers)
    assert r.status == 200, await r.text()
    assert r.content_type == "application/pdf"
    assert r.headers["Cache-Control"] == "no-store"
    body = await r.read()
    assert body.startswith(b"%PDF-")
    return body


# ----------------------------------------------------------------------------------------- QR codes


async def test_qr_svg_scans_to_the_public_url(client: TestClient, enterprise: dict[str, Any]) -> None:
    handle = enterprise["skus"][7]
    r = await client.get(f"/api/qr/{handle}")
    assert r.status == 200, await r.text()
    assert r.content_type == "image/svg+xml"
    svg = await r.read()
    image, width = svg_image(svg)
    assert scan(image) == [url_of(handle)]
    assert ET.fromstring(svg).findtext("{http://www.w3.org/2000/svg}title") == handle
    # 8 units a module by default; the quiet zone of 4 modules on each side is light.
    assert width % 8 == 0
    modules = width // 8
    assert all(image.getpixel((x * 8, y * 8)) == 255 for x in range(modules) for y in range(QUIET_ZONE))
    assert (await (await client.get(f"/api/qr/{handle}", params={"scale": "3"})).read()).count(b'width="') == 1


async def test_qr_png_scans_to_the_public_url(client: TestClient, enterprise: dict[str, Any]) -> None:
    handle = enterprise["skus"][3]
    r = await client.get(f"/api/qr/{handle}", params={"format": "png", "scale": "5"})
    assert r.status == 200, await r.text()
    assert r.content_type == "image/png"
    body = await r.read()
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(body))
    image.load()
    assert image.size[0] == image.size[1] and image.size[0] % 5 == 0
    modules = image.size[0] // 5 - 2 * QUIET_ZONE
    assert (modules - 17) % 4 == 0, "a QR symbol is 17 + 4·version modules wide"
    assert scan(image.convert("L")) == [url_of(handle)]
    assert 'filename="88.118.8.1001_SKU-2025-000003.png"' in r.headers["Content-Disposition"]


@pytest.mark.parametrize(
    ("suffix", "path"),
    [
        ("产品/批次 7", "/88.118.8.1001/%E4%BA%A7%E5%93%81/%E6%89%B9%E6%AC%A1%207"),
        ("a/../b", "/88.118.8.1001%2Fa%2F..%2Fb"),  # a browser would drop the dot segment
        ("x//y", "/88.118.8.1001%2Fx%2F%2Fy"),  # a proxy would merge the slashes
        ("100%&?#+", "/88.118.8.1001/100%25%26%3F%23%2B"),
    ],
)
async def test_qr_of_suffixes_that_need_encoding(
    client: TestClient, onboard: Callable[..., Any], suffix: str, path: str
) -> None:
    e = await onboard()
    assert e["prefix"] == "88.118.8.1001"
    handle = f"{e['prefix']}/{suffix}"
    await register(client, e["headers"], [handle])
    r = await client.get(f"/api/qr/{quote(handle, safe='')}", params={"format": "png"})
    assert r.status == 200, await r.text()
    assert scan(Image.open(io.BytesIO(await r.read())).convert("L")) == [BASE + path]


async def test_qr_answers_as_resolution_does(client: TestClient, enterprise: dict[str, Any]) -> None:
    """Unknown: 404 with the Handle JSON error, like GET /api/handles; invalid, another node's: 400."""
    missing = f"{enterprise['prefix']}/NO-SUCH-SKU"
    resolved = await client.get(f"/api/handles/{missing}")
    coded = await client.get(f"/api/qr/{missing}")
    assert (
        (coded.status, await coded.json())
        == (resolved.status, await resolved.json())
        == (
            404,
            {"responseCode": 100, "handle": missing, "message": "Handle Not Found"},
        )
    )
    for path, code in [
        ("/api/qr/no-slash", 102),
        ("/api/qr/99.1.2/x", 301),
        ("/api/qr/88.118.8.1001/%FF", 102),
        (f"/api/qr/{enterprise['skus'][0]}?format=gif", 4),
        (f"/api/qr/{enterprise['skus'][0]}?scale=0", 4),
        (f"/api/qr/{enterprise['skus'][0]}?scale=33", 4),
        (f"/api/qr/{enterprise['skus'][0]}?scale=%C2%B2", 4),
    ]:
        r = await client.get(path)
        assert r.status == 400, (path, await r.text())
        assert (await r.json())["responseCode"] == code, path


async def test_qr_is_cacheable(client: TestClient, enterprise: dict[str, Any]) -> None:
    handle = enterprise["skus"][0]
    first = await client.get(f"/api/qr/{handle}")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "public, max-age=3600"
    again = await client.get(f"/api/qr/{handle}", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["ETag"] == etag
    png = await client.get(f"/api/qr/{handle}", params={"format": "png"}, headers={"If-None-Match": etag})
    assert png.status == 200 and png.headers["ETag"] != etag  # another representation
    # Deleted: the code of a handle that is gone is no longer made.
    r = await client.delete(f"/api/handles/{handle}", headers=enterprise["headers"])
    assert r.status == 200
    assert (await client.get(f"/api/qr/{handle}", headers={"If-None-Match": etag})).status == 404


@pytest.mark.parametrize("config_overrides", [{"public_base_url": "https://id.example.cn/r/"}], indirect=True)
async def test_qr_encodes_the_configured_public_url(client: TestClient, enterprise: dict[str, Any]) -> None:
    handle = enterprise["skus"][1]
    r = await client.get(f"/api/qr/{handle}", params={"format": "png"})
    assert scan(Image.open(io.BytesIO(await r.read())).convert("L")) == [f"https://id.example.cn/r/{handle}"]
    pdf = await sheet(client, enterprise["headers"], prefix=enterprise["prefix"], count="2")
    ((image, _),) = pdf_pages(pdf)
    assert sorted(scan(image)) == [f"https://id.example.cn/r/{h}" for h in enterprise["skus"][:2]]


# ----------------------------------------------------------------------------------------- label sheets


async def test_sheet_of_a_prefix(client: TestClient, enterprise: dict[str, Any]) -> None:
    """30 labels on the default 3×8 layout: two A4 pages, every code scans to its handle's URL and
    every identifier is printed."""
    pdf = await sheet(client, enterprise["headers"], prefix=enterprise["prefix"], count="30")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 2
    box = reader.pages[0].mediabox
    assert (round(float(box.width) * 25.4 / 72), round(float(box.height) * 25.4 / 72)) == (210, 297)
    pages = pdf_pages(pdf)
    assert [len(scan(image)) for image, _ in pages] == [24, 6]
    assert sorted(url for image, _ in pages for url in scan(image)) == [url_of(h) for h in enterprise["skus"]]
    for (_, text), handles in zip(pages, (enterprise["skus"][:24], enterprise["skus"][24:]), strict=True):
        assert all(h in text for h in handles), text
        assert text.count("88.118.8.1001/") == len(handles)
    assert embedded_fonts(pdf) == set(), "ASCII labels use the PDF's built-in Helvetica"


async def test_sheet_from_a_suffix_and_count(client: TestClient, enterprise: dict[str, Any]) -> None:
    skus = enterprise["skus"]
    pdf = await sheet(client, enterprise["headers"], prefix=enterprise["prefix"], **{"from": "SKU-2025-000010"})
    ((image, text),) = pdf_pages(pdf)
    assert sorted(scan(image)) == [url_of(h) for h in skus[10:30]]  # one page (24) by default; 20 are left
    pdf = await sheet(
        client, enterprise["headers"], prefix=f"0.NA/{enterprise['prefix']}", count="3", **{"from": "SKU-2025-000027"}
    )
    ((image, text),) = pdf_pages(pdf)
    assert sorted(scan(image)) == [url_of(h) for h in skus[27:30]]
    assert [h for h in skus if h in text] == skus[27:30]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
async def test_layouts(client: TestClient, enterprise: dict[str, Any], name: str) -> None:
    layout = LAYOUTS[name]
    count = layout.per_page + 1  # a full page and one label on the next
    extra = [f"{enterprise['prefix']}/X-{i:02d}" for i in range(count - len(enterprise["skus"]))]
    if extra:
        await register(client, enterprise["headers"], extra)
    pdf = await sheet(client, enterprise["headers"], prefix=enterprise["prefix"], count=str(count), layout=name)
    pages = pdf_pages(pdf)
    assert [len(scan(image)) for image, _ in pages] == [layout.per_page, count - layout.per_page]
    assert all(h in pages[0][1] for h in enterprise["skus"][: layout.per_page])


async def test_chinese_suffixes_embed_a_cjk_font(client: TestClient, onboard: Callable[..., Any]) -> None:
    e = await onboard()
    handles = [f"{e['prefix']}/产品/批次-{i:02d}" for i in range(5)] + [f"{e['prefix']}/SKU-A"]
    await register(client, e["headers"], handles)
    pdf = await sheet(client, e["headers"], prefix=e["prefix"], count="6")
    ((image, text),) = pdf_pages(pdf)
    assert sorted(scan(image)) == sorted(url_of(h) for h in handles)
    assert all(h in text for h in handles), text
    fonts = embedded_fonts(pdf)
    assert len(fonts) == 1 and "CJK" in fonts.pop(), "one embedded (subset) CJK font"
    if os.environ.get("IDNODE_SCREENSHOTS"):
        image.save(Path(os.environ["IDNODE_SCREENSHOTS"]) / "label-sheet-a4-3x8.png")


async def test_template_field_under_the_identifier(
    client: TestClient, admin: dict[str, str], onboard: Callable[..., Any]
) -> None:
    """``field=batch`` prints each label's public value of the template field ``batch``."""
    template = {"id": "sku-basic", "fields": [{"index": 2001, "name": "batch", "type": "BATCH_NO"}]}
    assert (await client.post("/api/templates", json=template, headers=admin)).status == 201
    e = await onboard()
    await register(
        client,
        e["headers"],
        [f"{e['prefix']}/P-1"],
        **{"1001": ("TEMPLATE", "sku-basic@1"), "2001": ("BATCH_NO", "批号 B-2025-07")},
    )
    await register(client, e["headers"], [f"{e['prefix']}/P-2"])  # no template: no line under it
    pdf = await sheet(client, e["headers"], prefix=e["prefix"], count="2", field="batch")
    ((image, text),) = pdf_pages(pdf)
    assert "批号 B-2025-07" in text and text.count("B-2025-07") == 1
    assert len(scan(image)) == 2


async def test_who_may_print_labels(
    client: TestClient, admin: dict[str, str], onboard: Callable[..., Any], enterprise: dict[str, Any]
) -> None:
    prefix = enterprise["prefix"]
    other = await onboard()
    r = await client.post("/api/auditors", json={"name": "bureau"}, headers=admin)
    assert r.status == 201
    reply = await r.json()
    auditor = basic(reply["identity"], reply["secret"])
    for headers, status in [({}, 401), (other["headers"], 403), (auditor, 403)]:
        r = await client.get("/api/labels", params={"prefix": prefix}, headers=headers)
        assert r.status == status, await r.text()
        assert r.content_type == "application/json"
        assert (await r.json())["responseCode"] == {401: 402, 403: 400}[status]
    assert len(pdf_pages(await sheet(client, admin, prefix=prefix, count="1"))) == 1  # the node administrator


async def test_sheet_requests_that_are_refused(
    client: TestClient, enterprise: dict[str, Any], onboard: Callable[..., Any]
) -> None:
    headers, prefix = enterprise["headers"], enterprise["prefix"]
    for query, status, code in [
        ({"prefix": prefix, "count": "1001"}, 400, 4),
        ({"prefix": prefix, "count": "0"}, 400, 4),
        ({"prefix": prefix, "count": "-1"}, 400, 4),
        ({"prefix": prefix, "layout": "letter-5x2"}, 400, 4),
        ({}, 400, 4),
        ({"prefix": "99.1"}, 400, 301),
        ({"prefix": prefix, "from": "NO-SUCH"}, 404, 100),
        ({"prefix": prefix, "from": "a\x01b"}, 400, 102),
        ({"prefix": prefix, "field": "x" * 65}, 400, 4),
    ]:
        r = await client.get("/api/labels", params=query, headers=headers)
        assert r.status == status, (query, await r.text())
        assert (await r.json())["responseCode"] == code, query
    empty = await onboard()
    r = await client.get("/api/labels", params={"prefix": empty["prefix"]}, headers=empty["headers"])
    assert r.status == 404 and "no handles" in (await r.json())["message"]


async def test_a_thousand_labels(client: TestClient, enterprise: dict[str, Any]) -> None:
    """The most one request prints: 1,000 labels on 42 pages (24 a page), each page's codes scanning."""
    more = [f"{enterprise['prefix']}/LOT-{i:04d}" for i in range(1000)]
    await register(client, enterprise["headers"], more)
    pdf = await sheet(client, enterprise["headers"], prefix=enterprise["prefix"], count="1000", **{"from": "LOT-0000"})
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 42
    pages = pdf_pages(pdf, render={0, 41})
    assert sorted(url for page in (pages[0], pages[-1]) for url in scan(page[0])) == sorted(
        url_of(h) for h in more[:24] + more[984:]
    )
    assert all(h in "".join(text for _, text in pages) for h in more)


async def test_sheets_at_once_are_bounded(client: TestClient, enterprise: dict[str, Any]) -> None:
    state = client.app[LABELS_KEY]
    for _ in range(SHEETS_AT_ONCE):
        await state.sheets.acquire()
    try:
        r = await client.get("/api/labels", params={"prefix": enterprise["prefix"]}, headers=enterprise["headers"])
        assert r.status == 503 and r.headers["Retry-After"] == "5"
        assert (await r.json())["responseCode"] == 3
    finally:
        for _ in range(SHEETS_AT_ONCE):
            state.sheets.release()
    await sheet(client, enterprise["headers"], prefix=enterprise["prefix"], count="1")


def test_text_without_a_font_is_printed_as_the_url_has_it() -> None:
    """No font for Chinese (none installed, label_font wrong): the label still scans, and its text is
    the percent-encoded form rather than missing glyphs."""
    handle = "88.118.8.1001/批次-1"
    sheet = LabelSheet(LAYOUTS["a4-3x8"], "t", lambda: None)
    sheet.add([Label(handle, url_of(handle))])
    pdf = sheet.finish()
    ((image, text),) = pdf_pages(pdf)
    assert scan(image) == [url_of(handle)]
    assert "88.118.8.1001/%E6%89%B9%E6%AC%A1-1" in text
    assert embedded_fonts(pdf) == set()


def test_long_identifiers_shrink_then_are_cut() -> None:
    """The longest handles still get a label: the text at the layout's smallest size, cut with "..."
    where even that does not fit; the code (version 40 for 240 Chinese characters) scans in full."""
    long_ascii = "88.118.8.1001/" + "X" * 241
    long_chinese = "88.118.8.1001/" + "批次" * 120
    sheet = LabelSheet(LAYOUTS["a4-3x7"], "t", lambda: unicode_font(""))
    sheet.add([Label(long_ascii, url_of(long_ascii)), Label(long_chinese, url_of(long_chinese), "备注" * 100)])
    ((image, text),) = pdf_pages(sheet.finish(), dpi=300)
    assert sorted(scan(image)) == sorted([url_of(long_ascii), url_of(long_chinese)])
    assert text.startswith("88.118.8.1001/" + "X" * 20)
    assert "88.118.8.1001/" + "批次" * 20 in text and text.endswith("...")  # Chinese: cut, and no room for the note


@pytest.mark.parametrize("layout", ["a4-3x8", "a4-4x10"])
def test_codes_too_fine_to_print_are_refused(layout: str) -> None:
    """A code whose modules would be under 0.2 mm on the layout's labels: a 400 naming a layout where it fits."""
    handle = "88.118.8.1001/" + "批次" * 120
    sheet = LabelSheet(LAYOUTS[layout], "t", lambda: None)
    with pytest.raises(InvalidRequest, match="use layout a4-3x7") as refused:
        sheet.add([Label(handle, url_of(handle))])
    assert refused.value.handle == handle


# ----------------------------------------------------------------------------------------- public URLs


@pytest.mark.parametrize(
    ("settings", "base"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"host": "0.0.0.0", "port": "80"}, "http://127.0.0.1"),
        ({"host": "0.0.0.0", "advertise_host": "2001:db8::7"}, "http://[2001:db8::7]:8000"),
        ({"host": "::1", "port": "443", "tls_cert": "c.pem", "tls_key": "k.pem"}, "https://[::1]"),
        ({"host": "localhost"}, "http://localhost:8000"),
        ({"public_base_url": "https://id.example.cn/"}, "https://id.example.cn"),
        ({"public_base_url": "http://10.1.2.3:8080/resolve"}, "http://10.1.2.3:8080/resolve"),
    ],
)
def test_public_base_url(settings: dict[str, str], base: str) -> None:
    assert public_base_url(load_config(env={}, overrides=settings)) == base


@pytest.mark.parametrize(
    "url",
    [
        "id.example.cn",
        "ftp://id.example.cn",
        "https://",
        "https://id.example.cn/?a=1",
        "https://id.example.cn/#top",
        "https://user:pw@id.example.cn",
        "https://标识.中国",
        "https://id.example.cn/a b",
        "https://id.example.cn:99999",
    ],
)
def test_public_base_url_is_validated(url: str) -> None:
    with pytest.raises(ConfigError, match="public_base_url"):
        load_config(env={"IDNODE_PUBLIC_BASE_URL": url})


def test_handle_urls() -> None:
    assert handle_url("https://id.example.cn", "88.118.8.1001/SKU-1") == "https://id.example.cn/88.118.8.1001/SKU-1"
    assert handle_path("88.118.8.1001/a b/é~") == "/88.118.8.1001/a%20b/%C3%A9~"
    assert handle_path("88.118.8.1001/..") == "/88.118.8.1001%2F.."
    assert handle_path("88.118.8.1001/a/") == "/88.118.8.1001%2Fa%2F"
    assert handle_path("0.NA/88.118.8.1001") == "/0.NA/88.118.8.1001"


def test_unknown_label_font_is_no_font(tmp_path: Path) -> None:
    not_a_font = tmp_path / "x.ttf"
    not_a_font.write_bytes(b"not a font")
    assert unicode_font(str(not_a_font)) is None
    assert unicode_font(str(tmp_path / "missing.ttc") + "#2") is None
    found = unicode_font("")
    assert found is not None and Path(found.path).is_file(), "fonts-noto-cjk is installed by .ci/run"


# ----------------------------------------------------------------------------------------- a real node


def _http(url: str, headers: dict[str, str] | None = None, body: Any = None, method: str = "GET") -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as reply:
        return reply.read()


def test_a_served_node_prints_codes_of_its_public_url(tmp_path: Path) -> None:
    """``idnode serve`` with IDNODE_PUBLIC_BASE_URL: its codes and sheets carry that URL."""
    node = NodeProcess(tmp_path, env={"IDNODE_PUBLIC_BASE_URL": "https://id.example.cn"}).wait_ready()
    try:
        admin = basic(NODE_ADMIN, ADMIN_SECRET)
        promoter = json.loads(
            _http(f"{node.url}/api/promoters", admin, {"name": "P", "uscc": make_uscc(1, "92")}, "POST")
        )
        body = {"name": "E", "uscc": make_uscc(1), "promoter": promoter["id"]}
        enterprise = json.loads(_http(f"{node.url}/api/enterprises", admin, body, "POST"))
        owner = basic(enterprise["admin"], enterprise["secret"])
        handles = [f"{enterprise['prefix']}/件-{i}" for i in range(3)]
        for handle in handles:
            value = {"values": [{"index": 1, "type": "URL", "data": "https://trace.example.com/1"}]}
            _http(f"{node.url}/api/handles/{quote(handle)}", owner, value, "PUT")
        png = _http(f"{node.url}/api/qr/{quote(handles[0])}?format=png")
        assert scan(Image.open(io.BytesIO(png)).convert("L")) == [url_of(handles[0], "https://id.example.cn")]
        pdf = _http(f"{node.url}/api/labels?prefix={enterprise['prefix']}", owner)
        ((image, text),) = pdf_pages(pdf)
        assert sorted(scan(image)) == sorted(url_of(h, "https://id.example.cn") for h in handles)
        assert all(h in text for h in handles)
    finally:
        node.stop()


async def test_sheets_are_laid_out_in_a_helper_process_that_comes_back_after_dying() -> None:
    """A sheet is pure-Python work of seconds: it runs in a process of its own (so the serving process's
    event loop keeps its GIL). A helper killed while idle is replaced by the next sheet at once; one
    killed in the middle of a task costs that task a 503 (HelperStopped), not the feature."""
    import signal
    import time

    from registry import offload

    labels = [Label(f"88.118.8.1001/R-{n}", f"https://id.example.com/88.118.8.1001/R-{n}", "产品") for n in range(30)]
    layout = LAYOUTS["a4-3x8"]
    pdf = await renderer_sheet(layout, labels)
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 2  # 30 labels, 24 a page
    pool = offload._pool
    assert pool is not None
    pids = list(pool._processes)  # type: ignore[attr-defined]
    assert pids and os.getpid() not in pids
    for pid in pids:  # killed while idle
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):  # until the pool notices
        if pool._broken:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.05)
    again = await renderer_sheet(layout, labels[:5])
    assert len(PdfReader(io.BytesIO(again)).pages) == 1
    assert offload._pool is not pool
    # Killed in the middle of a task.
    busy = asyncio.ensure_future(offload.run(time.sleep, 30))
    for _ in range(100):
        await asyncio.sleep(0.05)
        pool = offload._pool
        if pool is not None and pool._processes:  # type: ignore[attr-defined]
            break
    await asyncio.sleep(0.3)  # the sleep has started
    for pid in list(pool._processes):  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(offload.HelperStopped):
        await asyncio.wait_for(busy, 10)
    assert (await renderer_sheet(layout, labels[:1])).startswith(b"%PDF")


async def renderer_sheet(layout: Any, labels: list[Label]) -> bytes:
    from resolver.labels import renderer

    return await renderer.render_sheet(layout, "idnode labels 88.118.8.1001", "", labels)


async def test_the_node_stopping_does_not_wait_for_a_task_in_hand() -> None:
    """``offload.shutdown`` terminates a helper that is busy (a workbook of minutes would otherwise hold
    the node's exit), and the task gets HelperStopped."""
    import time

    from registry import offload

    busy = asyncio.ensure_future(offload.run(time.sleep, 60))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if offload._pool is not None and offload._pool._processes:  # type: ignore[attr-defined]
            break
    await asyncio.sleep(0.3)
    started = time.monotonic()
    offload.shutdown()
    assert time.monotonic() - started < 10
    with pytest.raises(offload.HelperStopped):
        await asyncio.wait_for(busy, 10)
    assert offload._pool is None


async def test_an_idle_renderer_is_stopped_and_the_next_sheet_starts_one(monkeypatch) -> None:
    from registry import offload
    from resolver.labels import renderer

    monkeypatch.setattr(offload, "IDLE_SECONDS", 0.2)
    labels = [Label(f"88.118.8.1001/I-{n}", f"https://id.example.com/88.118.8.1001/I-{n}") for n in range(3)]
    layout = LAYOUTS["a4-3x8"]
    first, second = await asyncio.gather(  # two at once: the idle timer waits for both
        renderer.render_sheet(layout, "t", "", labels), renderer.render_sheet(layout, "t", "", labels[:1])
    )
    assert first.startswith(b"%PDF") and second.startswith(b"%PDF")
    pool = offload._pool
    assert pool is not None
    for _ in range(100):
        if offload._pool is None:
            break
        await asyncio.sleep(0.05)
    assert offload._pool is None  # stopped after 0.2 s idle
    assert (await renderer.render_sheet(layout, "t", "", labels)).startswith(b"%PDF")
    assert offload._pool is not None and offload._pool is not pool
    offload.shutdown()


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for entry in Path(f"/proc/{parent}/task").iterdir():
            children = Path(f"/proc/{parent}/task/{entry.name}/children")
            for child in children.read_text().split() if children.exists() else []:
                found.add(int(child))
                todo.append(int(child))
    return found


def test_a_node_with_workers_stops_with_its_renderers(tmp_path: Path) -> None:
    """Each worker that made a sheet has a renderer process; SIGTERM stops them all, promptly (a worker
    exiting with its renderer idle used to wait for it for ever)."""
    node = NodeProcess(tmp_path, "--workers", "2").wait_ready()
    try:
        admin = basic(NODE_ADMIN, ADMIN_SECRET)
        value = {"values": [{"index": 1, "type": "URL", "data": "https://trace.example.com/1"}]}
        _http(f"{node.url}/api/handles/88.118.8/label-stop", admin, value, "PUT")
        for _ in range(6):  # new connections: the workers share the port, so most likely both make one
            assert _http(f"{node.url}/api/labels?prefix=88.118.8&count=1", admin).startswith(b"%PDF")
        family = _descendants(node.proc.pid)
        renderers = [p for p in family if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(renderers) >= 3  # two workers and at least one renderer
    finally:
        started = time.monotonic()
        code = node.stop(timeout=30)
    assert code == 0 and time.monotonic() - started < 20, node.log()[-2000:]
    deadline = time.monotonic() + 5  # multiprocessing's resource tracker ends once its last user has
    while [p for p in family if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in family if Path(f"/proc/{p}").exists()]
