"""The end-to-end client: matrix-nio against Synapse and mxmedia behind nginx.

Run by tests/e2e.rs with E2E_BASE (the proxy's https URL), E2E_MAX_UPLOAD
(mxmedia's limit in bytes), E2E_TOKEN_TTL (seconds mxmedia may remember a
token) and E2E_BUCKET (the S3 endpoint direct uploads go to). With
E2E_FLOWS=proxy it runs only the flows every proxy recipe must carry (config,
an upload near the limit, over-limit 413s, async upload, Range, the
federation listener at E2E_FED), as users named with E2E_PREFIX. Every request
goes through the proxy, except a direct upload's PUT, which goes straight to
the bucket. Prints one JSON line with what it saw and exits non-zero on the
first failed check.
"""

import asyncio
import io
import json
import os
import struct
import sys
import zlib

from urllib.parse import quote

from nio import (
    AsyncClient,
    ContentRepositoryConfigResponse,
    DownloadError,
    LoginResponse,
    LogoutResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomSendResponse,
    ResizingMethod,
    ThumbnailResponse,
    UploadResponse,
)

BASE = os.environ["E2E_BASE"]
MAX_UPLOAD = int(os.environ["E2E_MAX_UPLOAD"])
TOKEN_TTL = float(os.environ["E2E_TOKEN_TTL"])
ADMIN_NAME, ADMIN_PASSWORD = os.environ.get("E2E_ADMIN", ":").split(":", 1)
BUCKET = os.environ.get("E2E_BUCKET", "")
FLOWS = os.environ.get("E2E_FLOWS", "all")
FED = os.environ.get("E2E_FED", "")
PREFIX = os.environ.get("E2E_PREFIX", "")
seen = {}


def check(condition, what):
    if not condition:
        print(json.dumps({"failed": what, "seen": seen}), flush=True)
        sys.exit(1)


def png(width, height):
    """A real RGB PNG with a gradient, made without any imaging library."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 128)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data):
    check(data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff", "thumbnail is an image")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    # JPEG: walk to the first SOF marker.
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    check(False, "JPEG without a frame header")


async def new_user(name):
    name = PREFIX + name
    client = AsyncClient(BASE, name, ssl=False)
    registered = await client.register(name, f"pw-{name}-e2e", device_name="register")
    check(isinstance(registered, RegisterResponse), f"register {name}: {registered}")
    await client.close()
    # A fresh login: a second device with its own token.
    client = AsyncClient(BASE, f"@{name}:" + registered.user_id.split(":", 1)[1], ssl=False)
    logged_in = await client.login(f"pw-{name}-e2e", device_name="e2e")
    check(isinstance(logged_in, LoginResponse), f"login {name}: {logged_in}")
    return client


async def raw(client, method, path, body=None, headers=None, token=None):
    headers = dict(headers or {})
    headers["Authorization"] = f"Bearer {token or client.access_token}"
    response = await client.send(method, path, body, headers)
    data = await response.read()
    return response.status, response.headers, data


async def direct_upload(alice, bob):
    """mautrix, a client library that speaks MSC3870, puts the bytes straight
    into the bucket through the upload URL and completes through the proxy."""
    import aiohttp
    from mautrix.api import HTTPAPI
    from mautrix.client import ClientAPI

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
    try:
        client = ClientAPI(
            mxid=alice.user_id, api=HTTPAPI(base_url=BASE, token=alice.access_token, client_session=session)
        )
        created = await client.create_mxc()
        url = created.unstable_upload_url or ""
        seen["upload_url_host"] = url.split("/")[2] if url.count("/") >= 2 else url
        check(url.startswith(BUCKET + "/"), f"the upload URL is on the bucket: {url}")
        picture = png(320, 200)
        mxc = await client.upload_media(picture, mime_type="image/png", filename="direct.png", async_upload=True)
        seen["direct"] = mxc
        reader = ClientAPI(mxid=bob.user_id, api=HTTPAPI(base_url=BASE, token=bob.access_token, client_session=session))
        data = await reader.download_media(mxc, timeout_ms=30000)
        check(data == picture, "the direct upload's bytes")
    finally:
        await session.close()
    got = await bob.download(mxc=mxc)
    check(not isinstance(got, DownloadError), f"download direct upload: {got}")
    check(got.content_type == "image/png", f"direct upload's type: {got.content_type}")
    check(got.filename == "direct.png", f"direct upload's name: {got.filename}")


async def moderation(alice, bob):
    """A user posts media in a room; a server admin (made with
    register_new_matrix_user --admin) quarantines the room's media through
    the proxy, it disappears on every route, the admin deletes it, and a
    normal user is refused on every admin path."""
    admin = AsyncClient(BASE, ADMIN_NAME, ssl=False)
    logged_in = await admin.login(ADMIN_PASSWORD, device_name="e2e")
    check(isinstance(logged_in, LoginResponse), f"admin login: {logged_in}")
    try:
        evidence = b"abusive content " * 1000
        uploaded, _ = await alice.upload(
            io.BytesIO(evidence), content_type="application/octet-stream", filename="x.bin", filesize=len(evidence)
        )
        check(isinstance(uploaded, UploadResponse), f"evidence upload: {uploaded}")
        mxc = uploaded.content_uri
        seen["evidence"] = mxc
        server_name, media_id = mxc[len("mxc://") :].split("/", 1)
        room = await alice.room_create(name="e2e room")
        check(isinstance(room, RoomCreateResponse), f"room: {room}")
        room_id = room.room_id
        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.file", "body": "x.bin", "url": mxc}
        )
        check(isinstance(sent, RoomSendResponse), f"send: {sent}")
        routes = [
            f"/_matrix/client/v1/media/download/{server_name}/{media_id}",
            f"/_matrix/client/v1/media/download/{server_name}/{media_id}/x.bin",
            f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}?width=32&height=32",
        ]
        status, _, _ = await raw(bob, "GET", routes[0])
        check(status == 200, f"evidence served before quarantine: {status}")
        room_path = quote(room_id, safe="")

        # Only Synapse knows the room's media: its own admin API says so,
        # through the proxy.
        status, _, body = await raw(admin, "GET", f"/_synapse/admin/v1/room/{room_path}/media")
        check(status == 200 and mxc in json.loads(body).get("local", []), f"room media list: {status} {body!r}")

        admin_paths = [
            ("GET", f"/_synapse/admin/v1/media/{server_name}/{media_id}"),
            ("DELETE", f"/_synapse/admin/v1/media/{server_name}/{media_id}"),
            ("POST", f"/_synapse/admin/v1/media/quarantine/{server_name}/{media_id}"),
            ("POST", f"/_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}"),
            ("POST", f"/_synapse/admin/v1/media/protect/{media_id}"),
            ("POST", f"/_synapse/admin/v1/media/unprotect/{media_id}"),
            ("POST", f"/_synapse/admin/v1/room/{room_path}/media/quarantine"),
            ("POST", f"/_synapse/admin/v1/quarantine_media/{room_path}"),
            ("POST", f"/_synapse/admin/v1/user/{quote(alice.user_id, safe='')}/media/quarantine"),
            ("GET", f"/_synapse/admin/v1/users/{quote(alice.user_id, safe='')}/media"),
            ("DELETE", f"/_synapse/admin/v1/users/{quote(alice.user_id, safe='')}/media"),
            ("POST", "/_synapse/admin/v1/media/delete?before_ts=40000000000"),
            ("POST", "/_synapse/admin/v1/purge_media_cache?before_ts=40000000000"),
            ("GET", "/_synapse/admin/v1/media/quarantine_changes"),
            ("GET", "/_synapse/admin/v1/statistics/users/media"),
        ]
        for method, path in admin_paths:
            status, _, body = await raw(bob, method, path, b"{}" if method == "POST" else None)
            check(status == 403, f"non-admin {method} {path}: {status} {body!r}")
            check(json.loads(body).get("errcode") == "M_FORBIDDEN", f"non-admin errcode on {path}: {body!r}")
        status, _, _ = await raw(bob, "GET", routes[0])
        check(status == 200, "refused admin calls changed nothing")

        status, _, body = await raw(admin, "POST", f"/_synapse/admin/v1/room/{room_path}/media/quarantine", b"{}")
        check(status == 200, f"room quarantine: {status} {body!r}")
        seen["num_quarantined"] = json.loads(body)["num_quarantined"]
        check(seen["num_quarantined"] == 1, f"one media item in the room: {body!r}")
        for who, client in (("alice", alice), ("bob", bob), ("admin", admin)):
            for path in routes:
                status, _, body = await raw(client, "GET", path)
                check(status == 404, f"{who} {path} after quarantine: {status}")
                check(json.loads(body).get("errcode") == "M_NOT_FOUND", f"quarantined errcode: {body!r}")
        status, _, body = await raw(admin, "GET", f"/_synapse/admin/v1/media/{server_name}/{media_id}")
        info = json.loads(body)["media_info"]
        check(status == 200 and info["quarantined_by"] == admin.user_id, f"media info: {body!r}")
        status, _, body = await raw(admin, "GET", "/_synapse/admin/v1/media/quarantine_changes")
        changes = json.loads(body)["changes"]
        check(status == 200 and {"origin": server_name, "media_id": media_id, "quarantined": True} in changes, f"log: {body!r}")

        status, _, body = await raw(admin, "DELETE", f"/_synapse/admin/v1/media/{server_name}/{media_id}")
        check(status == 200, f"delete: {status} {body!r}")
        check(json.loads(body) == {"deleted_media": [media_id], "total": 1}, f"delete answer: {body!r}")
        status, _, body = await raw(admin, "GET", f"/_synapse/admin/v1/media/{server_name}/{media_id}")
        check(status == 404, f"deleted media info: {status}")
        status, _, _ = await raw(admin, "GET", f"{routes[0]}?admin_unsafely_bypass_quarantine=true")
        check(status == 404, f"deleted media is gone even for the bypass: {status}")
    finally:
        await admin.close()


async def async_upload(alice, bob):
    # Async upload: create an id, upload to it, download it.
    status, _, body = await raw(alice, "POST", "/_matrix/media/v1/create")
    check(status == 200, f"create: {status} {body!r}")
    created = json.loads(body)
    seen["created"] = created["content_uri"]
    check("unused_expires_at" in created, "create gives an expiry")
    s, m = created["content_uri"][len("mxc://") :].split("/", 1)
    payload = os.urandom(300_000)
    status, _, body = await raw(
        alice,
        "PUT",
        f"/_matrix/media/v3/upload/{s}/{m}?filename=later.bin",
        payload,
        {"Content-Type": "application/octet-stream"},
    )
    check(status == 200, f"async upload: {status} {body!r}")
    status, _, body = await raw(bob, "PUT", f"/_matrix/media/v3/upload/{s}/{m}", b"x")
    check(status in (403, 409), f"a second upload to the id is refused: {status}")
    got = await bob.download(mxc=created["content_uri"])
    check(not isinstance(got, DownloadError), f"download async upload: {got}")
    check(got.body == payload, "async upload bytes")


async def refused(send):
    """An upload the server refuses while the client is still sending it.
    The refusal races the rest of the body: a proxy may close the
    connection before the client reads the answer (the client then sees a
    disconnect, as any client would). Up to three tries; the answer that
    arrives must be mxmedia's."""
    import aiohttp

    for attempt in range(3):
        try:
            return await send()
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            seen.setdefault("refusal_disconnects", []).append(type(e).__name__)
    check(False, "the refusal never reached the client")


async def limits(alice, bob):
    # A large upload streams through the proxy; one over the limit gets
    # mxmedia's Matrix error, not the proxy's page.
    big = os.urandom(MAX_UPLOAD - 1024)
    uploaded, _ = await alice.upload(io.BytesIO(big), content_type="application/octet-stream", filesize=len(big))
    check(isinstance(uploaded, UploadResponse), f"large upload: {uploaded}")
    got = await bob.download(mxc=uploaded.content_uri)
    check(not isinstance(got, DownloadError) and got.body == big, "large download")
    status, _, body = await refused(
        lambda: raw(
            alice, "POST", "/_matrix/media/v3/upload", os.urandom(MAX_UPLOAD + 4096), {"Content-Type": "text/plain"}
        )
    )
    seen["too_large"] = status
    check(status == 413, f"over the limit: {status}")
    check(json.loads(body).get("errcode") == "M_TOO_LARGE", f"over the limit is M_TOO_LARGE: {body[:200]!r}")

    # The same, streamed chunked with no declared length: cut off on arrival.
    async def chunks():
        for _ in range(MAX_UPLOAD // 65536 + 64):
            yield os.urandom(65536)

    status, _, body = await refused(
        lambda: raw(alice, "POST", "/_matrix/media/v3/upload", chunks(), {"Content-Type": "text/plain"})
    )
    seen["too_large_chunked"] = status
    check(status == 413, f"chunked over the limit: {status} {body[:200]!r}")
    check(json.loads(body).get("errcode") == "M_TOO_LARGE", "chunked over the limit is M_TOO_LARGE")


async def ranges(bob, server_name, media_id, picture):
    # Range requests pass through the proxy untouched.
    status, headers, body = await raw(
        bob, "GET", f"/_matrix/client/v1/media/download/{server_name}/{media_id}", headers={"Range": "bytes=0-9"}
    )
    check(status == 206 and body == picture[:10], f"range: {status}")
    check(headers.get("Content-Range") == f"bytes 0-9/{len(picture)}", "content-range")


async def federation_listener():
    """The federation listener sends media requests to mxmedia: an
    unsigned request gets mxmedia's Matrix error, marked as its answer."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"{FED}/_matrix/federation/v1/media/download/e2eNoSuchMedia"
    try:
        urllib.request.urlopen(url, context=context, timeout=30)
        check(False, "an unsigned federation request is refused")
    except urllib.error.HTTPError as e:
        seen["federation"] = e.code
        check(e.code == 401, f"federation listener: {e.code}")
        check(e.headers.get("X-Served-By") == "mxmedia", "the federation media route reaches mxmedia")
        check(json.loads(e.read()).get("errcode") == "M_UNAUTHORIZED", "federation errcode")


async def proxy_flows():
    """What every proxy recipe must carry."""
    alice = await new_user("alice")
    bob = await new_user("bob")
    try:
        config = await alice.content_repository_config()
        check(isinstance(config, ContentRepositoryConfigResponse), f"config: {config}")
        check(config.upload_size == MAX_UPLOAD, "config advertises mxmedia's limit")
        picture = png(320, 200)
        uploaded, _ = await alice.upload(
            io.BytesIO(picture), content_type="image/png", filename="p.png", filesize=len(picture)
        )
        check(isinstance(uploaded, UploadResponse), f"upload: {uploaded}")
        seen["mxc"] = uploaded.content_uri
        server_name, media_id = uploaded.content_uri[len("mxc://") :].split("/", 1)
        await async_upload(alice, bob)
        await limits(alice, bob)
        await ranges(bob, server_name, media_id, picture)
        await federation_listener()
    finally:
        await alice.close()
        await bob.close()
    print(json.dumps({"ok": True, "seen": seen}), flush=True)


async def main():
    alice = await new_user("alice")
    bob = await new_user("bob")
    try:
        await moderation(alice, bob)

        # Media config through the proxy.
        config = await alice.content_repository_config()
        check(isinstance(config, ContentRepositoryConfigResponse), f"config: {config}")
        seen["upload_size"] = config.upload_size
        check(config.upload_size == MAX_UPLOAD, "config advertises mxmedia's limit")

        # Plain upload of a picture, then download by both users.
        picture = png(640, 480)
        uploaded, _ = await alice.upload(
            io.BytesIO(picture), content_type="image/png", filename="gradient.png", filesize=len(picture)
        )
        check(isinstance(uploaded, UploadResponse), f"upload: {uploaded}")
        mxc = uploaded.content_uri
        seen["mxc"] = mxc
        for who, client in (("alice", alice), ("bob", bob)):
            got = await client.download(mxc=mxc)
            check(not isinstance(got, DownloadError), f"{who} download: {got}")
            check(got.body == picture, f"{who} gets the same bytes")
            check(got.content_type == "image/png", f"{who} gets the content type")
            check(got.filename == "gradient.png", f"{who} gets the file name: {got.filename}")

        # Thumbnails: scale keeps the aspect, crop fills the box.
        server_name, media_id = mxc[len("mxc://") :].split("/", 1)
        scaled = await bob.thumbnail(server_name, media_id, 320, 240, ResizingMethod.scale)
        check(isinstance(scaled, ThumbnailResponse), f"thumbnail scale: {scaled}")
        seen["scale"] = png_size(scaled.body)
        check(seen["scale"] == (320, 240), "scale thumbnail is 320x240")
        cropped = await bob.thumbnail(server_name, media_id, 96, 96, ResizingMethod.crop)
        check(isinstance(cropped, ThumbnailResponse), f"thumbnail crop: {cropped}")
        seen["crop"] = png_size(cropped.body)
        check(seen["crop"] == (96, 96), "crop thumbnail is 96x96")

        await async_upload(alice, bob)

        await direct_upload(alice, bob)

        await limits(alice, bob)

        await ranges(bob, server_name, media_id, picture)

        # Unknown media is the spec's 404.
        missing = await bob.download(server_name=server_name, media_id="doesNotExist0000000000000")
        check(isinstance(missing, DownloadError) and missing.status_code == "M_NOT_FOUND", f"missing: {missing}")

        # A logged-out token is refused (after mxmedia's token cache expires).
        old_token = alice.access_token
        logged_out = await alice.logout()
        check(isinstance(logged_out, LogoutResponse), f"logout: {logged_out}")
        await asyncio.sleep(TOKEN_TTL + 0.5)
        status, _, body = await raw(
            bob, "GET", f"/_matrix/client/v1/media/download/{server_name}/{media_id}", token=old_token
        )
        seen["after_logout"] = status
        check(status == 401, f"logged-out token: {status}")
        check(json.loads(body).get("errcode") == "M_UNKNOWN_TOKEN", f"logged-out errcode: {body!r}")
    finally:
        await alice.close()
        await bob.close()
    print(json.dumps({"ok": True, "seen": seen}), flush=True)


asyncio.run(proxy_flows() if FLOWS == "proxy" else main())
