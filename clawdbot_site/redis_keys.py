"""Every Redis key and channel Clawdbot uses, named once. Both planes import this map; a key
is built nowhere else (the admission scripts build theirs in Lua from the same parts, which
`LUA_PARTS` lists and tests/test_redis_keys.py checks against the scripts).

A flushed Redis costs little: slots and places lapse, rate windows restart, the routing
version is bumped again by the next config change (gateways also rebuild every 30 s). Lost
for good: request-log entries not yet flushed to the database, the metric counters (Prometheus
sees a counter reset), ejection history and load progress."""

from __future__ import annotations

PREFIX = "clawdbot:"

# --- Data plane: admission (gateway/admission.py, in Lua) ---------------------------------
SLOTS = "slots:"  # sorted set per node: lease id → expiry (ms); a member is a busy slot
QUEUE = "queue:"  # sorted set per node: lease id → expiry of its place in the queue
QUEUE_ORDER = "qorder:"  # sorted set per node: lease id → arrival, for first come first served
EJECTION = "eject:"  # hash per node: fails (the current run), until (ms), count (ejections)
RATE_WINDOW = "rl:"  # counters rl:r:<key id>:<minute> (requests), rl:t:<...> (tokens);
# a single sign-on principal's id is jwt:<digest of issuer and subject> (gateway.sso)
FREED = "freed:"  # pub/sub channel per node: a slot freed while requests queue there


def slots(node: str) -> str:
    return PREFIX + SLOTS + node


def queue(node: str) -> str:
    return PREFIX + QUEUE + node


def queue_order(node: str) -> str:
    return PREFIX + QUEUE_ORDER + node


def ejection(node: str) -> str:
    return PREFIX + EJECTION + node


def freed_channel(node: str) -> str:
    return PREFIX + FREED + node


FREED_CHANNELS = PREFIX + FREED  # + node name
FREED_PATTERN = FREED_CHANNELS + "*"


def rate_windows(kind: str = "*", key_id: str = "*") -> str:
    """A SCAN pattern for rate-limit windows: kind r (requests) or t (tokens)."""
    return f"{PREFIX}{RATE_WINDOW}{kind}:{key_id}:*"


# --- Data plane: routing, learned by RELEASE and read by ADMIT (gateway/routing.py) ---------
SPEED_PART = "speed:"  # hash per node|model: d, p (tokens/s of one sequence), n (samples), t
OUTPUT_LEN_PART = "outlen"  # hash: model → its usual answer length (a running average)
AFFINITY_PART = "aff:"  # string per prefix identity → the node that served (caches) it
# Sorted sets per node: a conversation's last prefix identity → its latest turn's expected
# end (ms), for conversations past their first turn and in it; and what is learned of them.
CONVERSATIONS_PART = "conv:"
FIRST_TURNS_PART = "conv1:"
# Hash: first and later turns continued (c1, c2) and ended without a next turn (e1, e2), as
# decaying counts, and the mean pause between turns in ms (gap).
CONVERSATION_STATS_PART = "convstats"
CONVERSATION_STATS = PREFIX + CONVERSATION_STATS_PART
# Hash per node: its prefix cache's intake (flow: tokens taken in all; rate: per ms, fading;
# t), the tokens it holds once learned (cap), its slots' recent average use (occ, ot).
PREFIX_CACHE_PART = "pcache:"
AFFINITY_INDEX_PART = "affidx"  # sorted set: prefix identity → when recorded, oldest out first
WORK_PART = "work:"  # hash per node: lease → "<started ms>:<work in decode tokens>"
QUEUED_WORK_PART = "qwork:"  # hash per node: queued lease → its work in decode tokens
SERVER_LOAD_PART = "srvload:"  # hash per node: the server's own running, waiting, kv (0..1)


def prefix_cache(node: str) -> str:
    return PREFIX + PREFIX_CACHE_PART + node


def speed(node: str, model: str) -> str:
    return f"{PREFIX}{SPEED_PART}{node}|{model}"


SPEEDS_PATTERN = PREFIX + SPEED_PART + "*"


# --- Data plane: records, written by the RELEASE script, read by gateway/metrics.py and the
# request-log flush (gateway/request_log.py) --------------------------------------------------
REQUESTS_PART = "m:requests"  # hash: model, node, status → count
TOKENS_PART = "m:tokens"  # hash: model, kind → count
DURATION_PART = "m:duration:"  # hash per model: bucket → count, and sum
TTFT_PART = "m:ttft:"
MODELS_PART = "m:models"  # set of the models seen, so /metrics knows what to read
REQUEST_LOG_PART = "requestlog"  # list of JSON entries, flushed to the database by a task
AFFINITY_METRIC_PART = "m:affinity"  # hash: hit, miss, rebalanced → count
METRIC_REQUESTS = PREFIX + REQUESTS_PART
METRIC_TOKENS = PREFIX + TOKENS_PART
METRIC_DURATION = PREFIX + DURATION_PART
METRIC_TTFT = PREFIX + TTFT_PART
METRIC_MODELS = PREFIX + MODELS_PART
REQUEST_LOG = PREFIX + REQUEST_LOG_PART
METRIC_AFFINITY = PREFIX + AFFINITY_METRIC_PART
# Entries the database refused (or that cannot be read), set aside by the flush so they cannot
# block the rest: kept (the newest REJECTED_KEPT), counted for /metrics.
REQUEST_LOG_REJECTED = PREFIX + "requestlog:rejected"
METRIC_LOG_REJECTED = PREFIX + "m:requestlog-rejected"
REQUEST_LOG_FLUSH_LOCK = PREFIX + "requestlog:flush-lock"

# --- Data plane: degradation tiers and the response cache (gateway/degradation.py and
# gateway/response_cache.py, in Lua) --------------------------------------------------------
TIER_WINDOW_PART = "tier:w:"  # hash per second: r (requests), f (failures), for the window
TIER_PART = "tier"  # hash: tier, since (ms), and the window last read: requests, failures
CACHE_ENTRY_PART = "answers:e:"  # string per answer: its JSON, expiring after the cache's TTL
CACHE_INDEX_PART = "answers:index"  # sorted set: digest → stored at (ms), oldest evicted first
CACHE_SIZES_PART = "answers:sizes"  # hash: digest → bytes counted against the budget
CACHE_BYTES_PART = "answers:bytes"  # counter: the bytes of every entry in the index
TIER = PREFIX + TIER_PART
CACHE_BYTES = PREFIX + CACHE_BYTES_PART


def cache_entry(digest: str) -> str:
    return PREFIX + CACHE_ENTRY_PART + digest


# --- Control plane → data plane ----------------------------------------------------------
ROUTING_VERSION = PREFIX + "routing:version"  # bumped on every committed config change
HEALTH = PREFIX + "health"  # hash: node → share of recent probes passed


def telemetry(node: str) -> str:
    """The node's latest GPU reading (JSON), expiring when its agent falls silent."""
    return PREFIX + "telemetry:" + node


def agent_heartbeat(node: str) -> str:
    return PREFIX + "agent:" + node


def server_load(node: str) -> str:
    """The node's load as its server reports it (hash: running, waiting, kv, at, stale),
    expiring 15 s after the last scrape that read it (nodes/server_load_store.py)."""
    return PREFIX + SERVER_LOAD_PART + node


# What the Lua scripts append to PREFIX (checked against their text by a test).
LUA_PARTS = frozenset(
    {
        SLOTS,
        QUEUE,
        QUEUE_ORDER,
        EJECTION,
        RATE_WINDOW,
        FREED,
        REQUESTS_PART,
        TOKENS_PART,
        DURATION_PART,
        TTFT_PART,
        MODELS_PART,
        REQUEST_LOG_PART,
        AFFINITY_METRIC_PART,
        TIER_WINDOW_PART,
        TIER_PART,
        CACHE_ENTRY_PART,
        CACHE_INDEX_PART,
        CACHE_SIZES_PART,
        CACHE_BYTES_PART,
        SPEED_PART,
        WORK_PART,
        QUEUED_WORK_PART,
        OUTPUT_LEN_PART,
        AFFINITY_PART,
        AFFINITY_INDEX_PART,
        CONVERSATIONS_PART,
        FIRST_TURNS_PART,
        CONVERSATION_STATS_PART,
        PREFIX_CACHE_PART,
        SERVER_LOAD_PART,
    }
)

# --- Django's cache and the Channels layer (settings.py) ---------------------------------------
DJANGO_CACHE = PREFIX + "cache"
CHANNELS = PREFIX + "channels"

# --- Control plane ---------------------------------------------------------------------------


def warming(node: str) -> str:
    """Set while the node's prefetch profiles load, so one warm-up runs at a time."""
    return PREFIX + "warming:" + node


def load_job(task_id: str) -> str:
    """A model load's progress, for the management API's task status."""
    return PREFIX + "loadtask:" + task_id


PROBE_LOCK = PREFIX + "lock:probe-nodes"


def alert_sent(channel_id: int, subject: str) -> str:
    """Set when an alert about `subject` went to the channel; expires after its interval."""
    return f"{PREFIX}alert:sent:{channel_id}:{subject}"


def alert_held(channel_id: int, subject: str) -> str:
    """How many alerts about `subject` were held back since the last one sent."""
    return f"{PREFIX}alert:held:{channel_id}:{subject}"


def heal_lock(node: str) -> str:
    return PREFIX + "lock:heal:" + node


# What tests may flush between cases: everything but the routing version (gateways compare
# it with their snapshot, and a version that went backwards could look current).
TRANSIENT_PATTERNS = tuple(
    PREFIX + pattern
    for pattern in (
        SLOTS + "*",
        QUEUE + "*",
        QUEUE_ORDER + "*",
        EJECTION + "*",
        RATE_WINDOW + "*",
        "m:*",
        "requestlog*",
        "health",
        "telemetry:*",
        "agent:*",
        "warming:*",
        "lock:*",
        "alert:*",
        TIER_PART + "*",
        "answers:*",
        SPEED_PART + "*",
        WORK_PART + "*",
        QUEUED_WORK_PART + "*",
        OUTPUT_LEN_PART,
        AFFINITY_PART + "*",
        AFFINITY_INDEX_PART,
        CONVERSATIONS_PART + "*",
        FIRST_TURNS_PART + "*",
        CONVERSATION_STATS_PART,
        PREFIX_CACHE_PART + "*",
        SERVER_LOAD_PART + "*",
    )
)


# --- Readiness checklist (readiness/checks.py) ---------------------------------------------
READINESS_PROBE = "readiness:"  # a throwaway key (30 s) written and read back by the check


def readiness_probe(token: str) -> str:
    return PREFIX + READINESS_PROBE + token
