"""The live status board's socket: `/ws/status/` (channels sample_project's shape).

A member of the session's active tenant joins `tenant-<id>-status` (or
`tenant-<id>-status-<window>` for `?window=1h|24h`), gets every card once, then each
card that console/live.py publishes. Anyone else is refused at the handshake; a member
removed from the tenant is disconnected at once (a per-user group). Messages are the
card fragments themselves; htmx's ws extension swaps them in by id.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from console import live
from usage.metrics import DEFAULT_WINDOW, WINDOWS

log = logging.getLogger("axonflow.live")


@database_sync_to_async
def active_tenant_of(user, session) -> int | None:
    """The tenant the session has active, if the user is still a member of it; else
    the user's first tenant, as the console's middleware picks it."""
    from tenants.middleware import SESSION_KEY
    from tenants.models import Membership

    if user is None or not user.is_authenticated:
        return None
    tenant_ids = list(Membership.objects.filter(user=user).order_by("tenant__name").values_list("tenant_id", flat=True))
    wanted = session.get(SESSION_KEY) if session is not None else None
    if wanted in tenant_ids:
        return wanted
    return tenant_ids[0] if tenant_ids else None


def window_of(scope) -> str:
    """The board's metrics window from `?window=` (5m, 1h, 24h); anything else is 5m."""
    query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
    window = (query.get("window") or [DEFAULT_WINDOW])[0]
    return window if window in WINDOWS else DEFAULT_WINDOW


class StatusBoardConsumer(AsyncWebsocketConsumer):
    tenant_id: int | None = None
    groups_joined: tuple[str, ...] = ()
    presence: asyncio.Task | None = None

    async def connect(self):
        user = self.scope.get("user")
        tenant_id = await active_tenant_of(user, self.scope.get("session"))
        if tenant_id is None:
            await self.close()  # before accept(): the handshake is refused (403)
            return
        window = window_of(self.scope)
        self.tenant_id = tenant_id
        self.groups_joined = (live.group_name(tenant_id, window), live.member_group(user.pk, tenant_id))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        live.board_opened(tenant_id)
        if settings.REDIS_URL:
            self.presence = asyncio.ensure_future(self.keep_present(tenant_id))
        await self.accept()
        for html in await database_sync_to_async(live.snapshot)(tenant_id, window):
            await self.send(text_data=html)

    async def disconnect(self, code):
        await self.leave()

    async def keep_present(self, tenant_id: int) -> None:
        """With Redis, publishers in every process render this tenant's cards only while
        some board keeps the presence key alive (console/live.py)."""
        while True:
            try:
                await asyncio.to_thread(live.mark_board_open, tenant_id, self.channel_name)
            except Exception:
                log.warning("could not refresh the board's presence in Redis", exc_info=True)
            await asyncio.sleep(live.PRESENCE_TTL_SECONDS / 3)

    async def leave(self) -> None:
        if self.presence is not None:
            self.presence.cancel()
            self.presence = None
            try:
                await asyncio.to_thread(live.mark_board_closed, self.tenant_id, self.channel_name)
            except Exception:
                log.warning("could not clear the board's presence in Redis", exc_info=True)
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = ()
        if self.tenant_id is not None:
            live.board_closed(self.tenant_id)
            self.tenant_id = None

    async def receive(self, text_data=None, bytes_data=None):
        """The board only listens; whatever the browser sends is ignored."""

    async def status_changed(self, event):
        await self.send(text_data=event["html"])

    async def board_revoked(self, event):
        """The user's membership of this tenant ended: leave the groups first, so not one
        more frame is sent, then close (4403: the page says so and does not reconnect)."""
        await self.leave()
        await self.close(code=4403)
