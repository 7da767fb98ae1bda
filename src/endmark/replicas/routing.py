"""Ray Serve's request-router hook for endmark replicas: prefix affinity, else least loaded.

A request whose prompt shares a long prefix with what a replica was sent before goes to that
replica (its slots hold the prefix cached), unless that replica's queue is much longer than
the shortest; anything else goes the way of Ray's default router (the less loaded of two).
A request may also name its replica (`target`), which is how the ingress reads every
replica's `/slots` and `/metrics`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import PendingRequest, ReplicaID, RunningReplica

from endmark.replicas.prefixes import PrefixIndex

log = logging.getLogger("endmark.replicas")

IMBALANCE = 8  # queued requests more than the least loaded replica's: then load wins


def _live() -> dict[str, int]:
    """Replica name -> times chosen, read by the ingress. Kept on `sys`, one per process, and
    looked up at each call: Ray ships the router and the ingress by value, each with its own
    copy of this module's globals."""
    return sys.__dict__.setdefault("_endmark_live_replicas", {})  # type: ignore[no-any-return]


def live_replicas() -> set[str]:
    """The replicas this process's router knows to be running."""
    return set(_live())


class PrefixAwareRouter(PowerOfTwoChoicesRequestRouter):
    def initialize_state(self, **kwargs: Any) -> None:
        super().initialize_state(**kwargs)
        self._prefixes = PrefixIndex()

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        names = {r.replica_id.unique_id for r in replicas}
        live = _live()
        for gone in set(live) - names:
            del live[gone]
            self._index().forget(gone)
        for name in names:
            live.setdefault(name, 0)

    def _index(self) -> PrefixIndex:
        if not hasattr(self, "_prefixes"):
            self._prefixes = PrefixIndex()
        return self._prefixes

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        kwargs = pending_request.kwargs if pending_request is not None else {}
        by_name = {r.replica_id.unique_id: r for r in candidate_replicas}
        target = kwargs.get("target")
        if target is not None:
            return [[by_name[target]]] if target in by_name else []
        text = kwargs.get("route_text") or ""
        holder, _ = self._index().best(text, set(by_name)) if text else (None, 0)
        if holder is not None and not self._overloaded(by_name[holder], candidate_replicas):
            others = [r for r in candidate_replicas if r is not by_name[holder]]
            return [[by_name[holder]], others] if others else [[by_name[holder]]]
        return await super().choose_replicas(candidate_replicas, pending_request)

    def _overloaded(self, replica: RunningReplica, candidates: list[RunningReplica]) -> bool:
        cache = self.replica_queue_len_cache
        lens = [cache.get(r.replica_id) or 0 for r in candidates]
        return (cache.get(replica.replica_id) or 0) - min(lens) > IMBALANCE

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        text = pending_request.kwargs.get("route_text") if pending_request is not None else None
        if text:
            self._index().record(text, replica_id.unique_id)
        _live()[replica_id.unique_id] = _live().get(replica_id.unique_id, 0) + 1

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._index().forget(replica_id.unique_id)
        _live().pop(replica_id.unique_id, None)
