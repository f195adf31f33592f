"""The README tour through a client generated from docs/openapi.yaml.

tests/clients.rs generates the client (openapi-python-client) into a
temporary directory, puts it on PYTHONPATH and runs this against a live
three-node cluster whose third node is down, so quorum errors can be
asked for. Only the generated client is used: no raw HTTP. Unexpected
statuses raise (raise_on_unexpected_status), so a status the document
does not declare fails the tour. Prints how many checks passed.

    python3 tour.py http://127.0.0.1:7001 http://127.0.0.1:7002 n3
"""

import sys
import threading

from chorus_client import Client
from chorus_client.api.default import (
    batch,
    changes,
    delete_key,
    get_crdt,
    get_key,
    head_health,
    health,
    metrics,
    put_key,
    scan,
    update_crdt,
)
from chorus_client.models import (
    BatchOp,
    BatchOpOp,
    BatchRequest,
    ChangesPage,
    CounterState,
    CounterUpdate,
    CounterUpdateType,
    Error,
    HealthStatus,
    MapState,
    MapUpdate,
    MapUpdateUpdate,
    PutKeyIfNoneMatch,
    QuorumName,
    ScanPage,
    SetAdd,
    SetAddType,
    SetRemove,
    SetRemoveType,
    SetState,
    Siblings,
)
from chorus_client.types import UNSET

URL, OTHER, DOWN = sys.argv[1], sys.argv[2], sys.argv[3]
CONTEXT = "x-chorus-context"
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def context(response):
    value = response.headers.get(CONTEXT)
    check(value, f"an {CONTEXT} on a {response.status_code}")
    return value


client = Client(base_url=URL, raise_on_unexpected_status=True, timeout=30.0)
other = Client(base_url=OTHER, raise_on_unexpected_status=True, timeout=30.0)

# The node serves.
r = health.sync_detailed(client=client)
check(r.status_code == 200 and r.parsed.status == HealthStatus.OK, "health")
check(head_health.sync_detailed(client=client).status_code == 200, "HEAD health")

# Write, then read with the context the write and the read hand out.
r = put_key.sync_detailed("fruit", client=client, body={"name": "apple"})
check(r.status_code == 204, f"put: {r.status_code}")
check("overlap=true" in r.headers["x-chorus-quorum"], "quorum header")
r = get_key.sync_detailed("fruit", client=client)
check(r.status_code == 200 and r.parsed == {"name": "apple"}, f"get: {r.parsed}")
read_context = context(r)
r = get_key.sync_detailed("fruit", client=other)
check(r.parsed == {"name": "apple"}, "any node serves any key")

# Read-modify-write: the write replaces what the read saw.
r = put_key.sync_detailed(
    "fruit", client=client, body={"name": "pear"}, x_chorus_context=read_context
)
check(r.status_code == 204, "update with the context")
r = get_key.sync_detailed("fruit", client=client)
check(r.status_code == 200 and r.parsed == {"name": "pear"}, "the update replaced it")

# A concurrent (blind) write is kept beside it: 300 with both siblings.
r = put_key.sync_detailed("fruit", client=client, body={"name": "plum"})
check(r.status_code == 204, "blind write")
r = get_key.sync_detailed("fruit", client=client)
check(r.status_code == 300 and isinstance(r.parsed, Siblings), f"siblings: {r.status_code}")
values = sorted(s.value["name"] for s in r.parsed.siblings)
check(values == ["pear", "plum"], f"both writes kept: {values}")
both = context(r)

# Resolve: write the merged value with the context that covers both.
r = put_key.sync_detailed(
    "fruit", client=client, body={"name": "pear+plum"}, x_chorus_context=both,
    returnbody=True,
)
check(r.status_code == 200 and r.parsed == {"name": "pear+plum"}, "resolved, returnbody")
resolved = context(r)

# A quorum the cluster cannot meet: a 503 that says who answered.
r = put_key.sync_detailed(
    "fruit", client=client, body={"name": "x"}, w=QuorumName.ALL,
    x_chorus_context=resolved, timeout_ms=2000,
)
check(r.status_code == 503 and isinstance(r.parsed, Error), f"w=all: {r.status_code}")
check(r.parsed.error == "quorum_not_met", r.parsed.error)
# It fails as soon as it cannot succeed: the live replicas may not have
# answered yet (n3's refused connection can come first).
check(r.parsed.needed == 3 and 0 <= r.parsed.acked <= 2, f"{r.parsed.needed} {r.parsed.acked}")
check(r.parsed.primary_acked <= r.parsed.acked, "primary_acked")
check([f.node for f in r.parsed.failed] == [DOWN], f"failed: {r.parsed.failed}")
r = get_key.sync_detailed("fruit", client=client, r=5)
check(r.status_code == 400 and r.parsed.error == "bad_parameter", "r over n")
r = get_key.sync_detailed("fruit", client=client, r=1, pr=2)
check(r.status_code == 400 and "pr" in r.parsed.message, "pr over r")

# Delete with the context; then a 404 that still hands out a context.
r = get_key.sync_detailed("fruit", client=client)
r = delete_key.sync_detailed("fruit", client=client, x_chorus_context=context(r))
check(r.status_code == 204, "delete")
r = get_key.sync_detailed("fruit", client=client)
check(r.status_code == 404 and r.parsed.error == "not_found", f"deleted: {r.status_code}")

# Conditional writes: create only.
r = put_key.sync_detailed(
    "config", client=client, body={"v": 1}, if_none_match=PutKeyIfNoneMatch.VALUE_0
)
check(r.status_code == 204, "created")
r = put_key.sync_detailed(
    "config", client=client, body={"v": 2}, if_none_match=PutKeyIfNoneMatch.VALUE_0
)
check(r.status_code == 412 and r.parsed.error == "precondition_failed", "create only")
# Update only if nobody wrote since the read.
seen = context(get_key.sync_detailed("config", client=client))
r = put_key.sync_detailed("config", client=client, body={"v": 3}, if_match=seen)
check(r.status_code == 204, "if-match holds")
r = put_key.sync_detailed("config", client=client, body={"v": 4}, if_match=seen)
check(r.status_code == 412, "if-match no longer holds")

# A value that expires: its instant comes back in X-Chorus-Expires.
r = put_key.sync_detailed("session/1", client=client, body={"user": "ann"}, ttl_ms=30000)
check(r.status_code == 204 and r.headers.get("x-chorus-expires", "").endswith("Z"), "ttl")

# Idempotent retries: the same request twice is one write; the key reused
# for another request is a 422.
first = put_key.sync_detailed("order", client=client, body="paid", idempotency_key="o-1")
again = put_key.sync_detailed("order", client=client, body="paid", idempotency_key="o-1")
check(first.status_code == again.status_code == 204, "retry")
check(context(first) == context(again), "a retry is the first write")
r = put_key.sync_detailed("order", client=client, body="void", idempotency_key="o-1")
check(r.status_code == 422 and r.parsed.error == "idempotency_key_reused", "reuse")

# JSON null is a value: written as a batch op's value (the PUT body of
# this client cannot carry it, docs/clients.md), read back as None with a
# 200, where a missing key is a 404.
ops = [
    BatchOp(op=BatchOpOp.PUT, key="nothing", value=None),
    BatchOp(op=BatchOpOp.PUT, key="users/1", value={"name": "ann"}),
    BatchOp(op=BatchOpOp.PUT, key="users/2", value={"name": "bob"}),
    BatchOp(op=BatchOpOp.PUT, key="users/3", value={"name": "cy"}),
    BatchOp(op=BatchOpOp.DELETE, key="config"),
    BatchOp(op=BatchOpOp.GET, key="missing"),
]
r = batch.sync_detailed(client=client, body=BatchRequest(ops=ops))
check(r.status_code == 200, f"batch: {r.status_code}")
statuses = [result.status for result in r.parsed.results]
check(statuses == [204, 204, 204, 204, 204, 404], f"batch statuses: {statuses}")
r = get_key.sync_detailed("nothing", client=client)
check(r.status_code == 200 and r.parsed is None, "a stored null")

# Scans: a prefix, a page at a time.
r = scan.sync_detailed(client=client, prefix="users/", limit=2)
check(r.status_code == 200 and isinstance(r.parsed, ScanPage), "scan")
keys = [item.key for item in r.parsed.items]
cursor = r.parsed.next_
while cursor:
    r = scan.sync_detailed(client=client, prefix="users/", limit=2, cursor=cursor)
    keys += [item.key for item in r.parsed.items]
    cursor = r.parsed.next_
check(keys == ["users/1", "users/2", "users/3"], f"scanned {keys}")

# CRDTs: a counter and a set, never siblings.
for _ in range(3):
    r = update_crdt.sync_detailed(
        "visits", client=client,
        body=CounterUpdate(type_=CounterUpdateType.COUNTER, increment=2),
    )
    check(r.status_code == 204, "increment")
r = get_crdt.sync_detailed("visits", client=client)
check(isinstance(r.parsed, CounterState) and r.parsed.value == 6, f"counter: {r.parsed}")
r = update_crdt.sync_detailed(
    "tags", client=client, body=SetAdd(type_=SetAddType.SET, add=["red", "blue"]),
    returnbody=True,
)
check(isinstance(r.parsed, SetState) and sorted(r.parsed.value) == ["blue", "red"], "set")
r = get_crdt.sync_detailed("tags", client=client)
r = update_crdt.sync_detailed(
    "tags", client=client, body=SetRemove(type_=SetRemoveType.SET, remove=["red"]),
    x_chorus_context=context(r),
)
check(r.status_code == 204, "set remove with the read's context")
r = get_crdt.sync_detailed("tags", client=other)
check(isinstance(r.parsed, SetState) and r.parsed.value == ["blue"], f"set after remove: {r.parsed}")
update = MapUpdate.from_dict({"type": "map", "update": {
    "visits": {"type": "counter", "increment": 1},
    "by": {"type": "set", "add": ["ann"]},
}})
check(isinstance(update.update, MapUpdateUpdate), "a typed map update")
r = update_crdt.sync_detailed("page", client=client, body=update)
check(r.status_code == 204, f"map update: {r.status_code}")
r = get_crdt.sync_detailed("page", client=client)
check(isinstance(r.parsed, MapState), f"map: {r.parsed}")
fields = r.parsed.value.to_dict()
check(fields["visits"]["value"] == 1 and fields["by"]["value"] == ["ann"], f"fields: {fields}")
r = get_crdt.sync_detailed("fruit", client=client)
check(r.status_code in (404, 409), f"a plain key on /crdt: {r.status_code}")

# The change feed: a cursor at the present, then what came after it.
r = changes.sync_detailed(client=client, since="now")
check(r.status_code == 200 and isinstance(r.parsed, ChangesPage), "feed cursor")
since = r.parsed.next_
put_key.sync_detailed("users/4", client=client, body={"name": "dee"})
seen = []
for _ in range(20):
    r = changes.sync_detailed(client=client, since=since, prefix="users/", timeout_ms=1000)
    seen += [c.key for c in r.parsed.changes]
    since = r.parsed.next_
    if "users/4" in seen:
        break
check("users/4" in seen, f"the feed saw the write: {seen}")

# Watch a key: a long poll answered by another client's write through
# another node; and a 304 with the same context at the timeout.
r = get_key.sync_detailed("watched", client=client)
check(r.status_code == 404, "nothing yet")
put_key.sync_detailed("watched", client=client, body=1)
seen = context(get_key.sync_detailed("watched", client=client))
r = get_key.sync_detailed("watched", client=client, watch=True, timeout_ms=300,
                          x_chorus_context=seen)
check(r.status_code == 304 and context(r) == seen, f"watch timeout: {r.status_code}")
answer = {}
watcher = threading.Thread(target=lambda: answer.update(r=get_key.sync_detailed(
    "watched", client=client, watch=True, timeout_ms=20000, x_chorus_context=seen)))
watcher.start()
r = put_key.sync_detailed("watched", client=other, body=2, x_chorus_context=seen)
check(r.status_code == 204, "the write a watcher waits for")
watcher.join(30)
check(answer["r"].status_code == 200 and answer["r"].parsed == 2, "the watch saw the write")

r = metrics.sync_detailed(client=client)
check(r.status_code == 200 and b"chorus_requests_total" in r.content, "metrics")
check(UNSET is not None, "unset")
print(f"checks: {checks}")
