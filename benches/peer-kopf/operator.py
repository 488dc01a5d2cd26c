"""The benchmark's peer: the same job as secprov-operator for Coveo providers, written the way a
user might with kopf (https://kopf.readthedocs.io): on create/update/resume GET the remote
provider, POST it when missing, PUT it when it differs, and write a Ready condition into
status; a timer re-reads it every resync period and writes status only when it changed;
on delete DELETE it. Defaults of kopf are kept (finalizer, last-handled-configuration
annotation, progress annotations, k8s events for handlers), as a user would.

Environment: COVEO_URL, COVEO_ORG, COVEO_API_KEY, PEER_CONCURRENCY (remote reconciles at
once, like --concurrency), PEER_RESYNC_S.
"""
import asyncio
import datetime
import os

import aiohttp
import kopf

URL = os.environ["COVEO_URL"].rstrip("/")
ORG = os.environ["COVEO_ORG"]
KEY = os.environ["COVEO_API_KEY"]
CONCURRENCY = int(os.environ.get("PEER_CONCURRENCY", "16"))
RESYNC = float(os.environ.get("PEER_RESYNC_S", "300"))

_session = None
_limit = None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_):
    global _session, _limit
    _session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"})
    _limit = asyncio.Semaphore(CONCURRENCY)
    settings.watching.server_timeout = 300


@kopf.on.cleanup()
async def cleanup(**_):
    await _session.close()


def _base():
    return f"{URL}/rest/organizations/{ORG}/securityproviders"


def _desired(name, spec):
    coveo = spec.get("coveo") or {}
    return {
        "id": spec.get("providerId") or name,
        "displayName": spec.get("displayName") or name,
        "type": coveo.get("type", "EXPANDED"),
        "nodeRequired": coveo.get("nodeRequired", False),
        "caseSensitive": coveo.get("caseSensitive", False),
        "parameters": {k: {"value": v, "sensitive": False} for k, v in (coveo.get("parameters") or {}).items()},
        "referencedBy": coveo.get("referencedBy") or [],
        "cascadingSecurityProviders": {c["id"]: c for c in coveo.get("cascadingSecurityProviders") or []},
    }


def _differs(desired, observed):
    if any(observed.get(k) != desired[k] for k in ("displayName", "type", "nodeRequired", "caseSensitive")):
        return True
    refs = lambda rs: sorted((r.get("type"), r.get("id")) for r in rs or [])
    if refs(desired["referencedBy"]) != refs(observed.get("referencedBy")):
        return True
    ids = lambda cs: sorted(c.get("id") for c in (cs or {}).values())
    return ids(desired["cascadingSecurityProviders"]) != ids(observed.get("cascadingSecurityProviders"))


async def _sync(name, spec):
    desired = _desired(name, spec)
    async with _limit:
        async with _session.get(f"{_base()}/{desired['id']}") as r:
            if r.status == 404:
                observed = None
            else:
                r.raise_for_status()
                observed = await r.json()
        if observed is None:
            async with _session.post(_base(), json=desired) as r:
                r.raise_for_status()
            async with _session.get(f"{_base()}/{desired['id']}") as r:
                r.raise_for_status()
                observed = await r.json()
        elif _differs(desired, observed):
            async with _session.put(f"{_base()}/{desired['id']}", json=desired) as r:
                r.raise_for_status()
                observed = await r.json()
    return desired["id"], observed


def _status(remote_id, observed, old):
    current = (observed or {}).get("currentStatus") or {}
    ready = current.get("type") not in ("CREATING", "ERROR", "PAUSED_ON_ERROR", "DISABLED", "PAUSED")
    status = "True" if ready else "False"
    previous = next((c for c in (old or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == status else \
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "backend": "coveo",
        "remoteId": remote_id,
        "conditions": [{"type": "Ready", "status": status, "reason": "Available" if ready else "NotAvailable",
                        "message": "", "lastTransitionTime": since}],
    }


def _same(a, b):
    def pick(s):
        s = s or {}
        return s.get("remoteId"), [(c.get("type"), c.get("status")) for c in s.get("conditions") or []]
    return pick(a) == pick(b)


@kopf.on.resume("secprov.dev", "v1alpha1", "securityproviders")
@kopf.on.create("secprov.dev", "v1alpha1", "securityproviders")
@kopf.on.update("secprov.dev", "v1alpha1", "securityproviders", field="spec")
async def reconcile(name, spec, status, patch, **_):
    remote_id, observed = await _sync(name, spec)
    new = _status(remote_id, observed, status)
    if not _same(new, status):
        patch.status.update(new)


@kopf.timer("secprov.dev", "v1alpha1", "securityproviders", interval=RESYNC, initial_delay=RESYNC)
async def resync(name, spec, status, patch, **_):
    remote_id, observed = await _sync(name, spec)
    new = _status(remote_id, observed, status)
    if not _same(new, status):
        patch.status.update(new)


@kopf.on.delete("secprov.dev", "v1alpha1", "securityproviders")
async def delete(name, spec, **_):
    remote_id = spec.get("providerId") or name
    async with _limit:
        async with _session.delete(f"{_base()}/{remote_id}") as r:
            if r.status not in (200, 204, 404):
                r.raise_for_status()
