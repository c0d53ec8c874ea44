"""The few things that happen in a lower layer and matter to a higher one.

A lower layer sends one of these plain Django signals; a higher layer connects a
receiver in its AppConfig.ready(). Nobody imports upward to notify (STYLE.md,
"Telling other layers what happened"). Receivers are quick and never raise into the
sender: they queue their work (a cache drop, a board push) and return. Imports
nothing of ours.
"""

from django.dispatch import Signal

# tenant_id, provider_id, created, deleted: a ProviderConfig was created, saved or deleted.
provider_changed = Signal()
# tenant_id, provider_id, status, source, changed: a provider's health was assessed
# (by a probe or by traffic); `changed` says whether its status moved. Sent on the
# event loop when the sender has one, else from a sync thread.
status_changed = Signal()
# tenant_id, provider_id, opened, detail, latency_ms: traffic opened (or a trial
# request closed) a provider's circuit in this process.
circuit_changed = Signal()
# tenant_id, provider_id, action, actor, reason, until: an operator drained, forced or
# released a provider (providers/operator.py, from the console and the API).
operator_action = Signal()
# tenant_id, provider_ids: a batch of usage records and metric buckets was written
# (sent from the usage writer's thread; the board refreshes those providers' cards).
usage_recorded = Signal()
