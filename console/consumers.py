"""The live status board's socket: `/ws/status/` (channels sample_project's shape).

A member of the session's active tenant joins `tenant-<id>-status`, gets every card
once, then each card that console/live.py publishes. Anyone else is refused at the
handshake. Messages are the card fragments themselves; htmx's ws extension swaps
them in by id.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from console import live


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


class StatusBoardConsumer(AsyncWebsocketConsumer):
    group: str | None = None

    async def connect(self):
        tenant_id = await active_tenant_of(self.scope.get("user"), self.scope.get("session"))
        if tenant_id is None:
            await self.close()  # before accept(): the handshake is refused (403)
            return
        self.group = live.group_name(tenant_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        for html in await database_sync_to_async(live.snapshot)(tenant_id):
            await self.send(text_data=html)

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """The board only listens; whatever the browser sends is ignored."""

    async def status_changed(self, event):
        await self.send(text_data=event["html"])
