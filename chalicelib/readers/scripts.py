"""The Lua scripts the read side runs in Redis, and how they are sent (EVALSHA, then EVAL when
the server lacks the script: restarted or flushed). Each is one atomic step of Redis's own.

- GUARDED_SET: the read cache's version-guarded writes of its entries, the loader's and the
  readers' fills alike (`guarded_set`); what it keeps is the cache's rule (`readers/cache.py`,
  "Ordering" and "created_at, whatever the versions").
- RECORD, DROP and READ_PAIR: the pending writes' record of accepted commands, their removal once
  a replica shows them, and a read by key's one round trip for the cache entry and the pending
  entry together (`readers/pending.py`; the entries' format is `readers/pending_entry.py`).
  `read_pair` sends the same read as two commands in one write (no script) to this package's own
  client, RespClient; see its docstring for why that order is as good as the script.

GUARDED_SET, RECORD and DROP compare (version, op_id) with ordering.LUA_NEWER, the loader's order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from chalicelib.ordering import LUA_NEWER
from chalicelib.readers.resp import RespClient
from chalicelib.readers.resp_wire import RespError, encode_command


class CacheClient(Protocol):
    """What the cache needs of a Redis client: RespClient, or redis-py's Redis (bytes replies)."""

    def execute_command(self, *args: Any) -> Any: ...


# -- the read cache ------------------------------------------------------------------------------
GUARDED_SET = (
    """
-- Version-guarded writes of cache entries (chalicelib/readers/cache.py).
-- KEYS: entry keys. ARGV[1]: "load" or "fill"; ARGV[2]: TTL in ms; then per key:
-- state, version, op_id, payload, floor. An entry is "STATE|VERSION|OP_ID|PAYLOAD"."""
    + LUA_NEWER
    + """
-- created_at, whatever the versions: an entry's is its row's "created_at" (a present entry: the
-- text dump_row writes, found as such, since a JSON string cannot hold that quote-colon-quote
-- unescaped) or its whole PAYLOAD (a fence or a tombstone that has one). FLOOR is the earliest
-- `at` the writer knows for the key ("" when none). Every one of them is an `at` the key's
-- committed commands hold, and created_at only ever goes down: the earliest of them is kept, by
-- an entry written and by one that stays. Only that text is rewritten: never a re-encoded payload.
local MARK = '"created_at":"'
local function instant(t)
  -- as reads show timestamps: YYYY-MM-DDTHH:MM:SS, then .ffffff or nothing, then Z
  if type(t) ~= "string" or string.sub(t, 11, 11) ~= "T" or string.sub(t, -1) ~= "Z" then return nil end
  if #t == 27 and string.sub(t, 20, 20) == "." then return string.sub(t, 1, 26) end
  if #t == 20 then return string.sub(t, 1, 19) .. ".000000" end
  return nil
end
local function created_of(state, payload)
  -- the created_at text, and where it lies in the payload
  if state ~= "p" then
    if instant(payload) then return payload, 1, #payload end
    return nil
  end
  local _, last = string.find(payload, MARK, 1, true)
  local stop = last and string.find(payload, '"', last + 1, true)
  if not stop then return nil end
  local text = string.sub(payload, last + 1, stop - 1)
  if instant(text) then return text, last + 1, stop - 1 end
  return nil
end
local function earlier(a, b)
  -- a, then b: nil, "" or anything else not a timestamp is none; a timestamp is earlier than none
  local ka, kb = instant(a), instant(b)
  if ka == nil then return false end
  return kb == nil or bytes_cmp(ka, kb) < 0
end
local function with_created(state, payload, text)
  local old, first, last = created_of(state, payload)
  if old then return string.sub(payload, 1, first - 1) .. text .. string.sub(payload, last + 1) end
  if state == "p" then return payload end
  return text
end
local mode, ttl = ARGV[1], ARGV[2]
local written = 0
for i = 1, #KEYS do
  local at = 2 + (i - 1) * 5
  local state, version_text, op_id, payload = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local created = created_of(state, payload)
  if earlier(ARGV[at + 5], created) then created = ARGV[at + 5] end
  local version = tonumber(version_text)
  local write = true
  local current = redis.call("GET", KEYS[i])
  local cur_version, cur_text, cur_state, cur_op, cur_payload, cur_created
  if current then
    local a = string.find(current, "|", 1, true)
    local b = a and string.find(current, "|", a + 1, true)
    local c = b and string.find(current, "|", b + 1, true)
    cur_text = c and string.sub(current, a + 1, b - 1)
    cur_version = cur_text and tonumber(cur_text)
    if cur_version then
      cur_state = string.sub(current, 1, a - 1)
      cur_op = string.sub(current, b + 1, c - 1)
      cur_payload = string.sub(current, c + 1)
      cur_created = created_of(cur_state, cur_payload)
      if mode == "fill" and cur_state == "m" then
        -- a fill replaces a fence at least as new as it: in (version, op_id) order, or by
        -- version alone when the reader does not know its op_id (CachedReader's fills)
        if op_id == "" then
          write = version >= cur_version
        else
          write = not newer(cur_version, cur_op, version, op_id)
        end
      else
        write = newer(version, op_id, cur_version, cur_op)
      end
    end
  end
  if write then
    if earlier(cur_created, created) then created = cur_created end
    if created then payload = with_created(state, payload, created) end
    redis.call("SET", KEYS[i], state .. "|" .. version_text .. "|" .. op_id .. "|" .. payload, "PX", ttl)
    written = written + 1
  elseif earlier(created, cur_created) and (cur_created or cur_state ~= "p") then
    -- refused, but it knows an earlier created_at: the entry that stays takes it, keeping its TTL
    local left = redis.call("PTTL", KEYS[i])
    if left > 0 then
      local kept = with_created(cur_state, cur_payload, created)
      redis.call("SET", KEYS[i], cur_state .. "|" .. cur_text .. "|" .. cur_op .. "|" .. kept, "PX", left)
    end
  end
end
return written
"""
)
GUARDED_SET_SHA = hashlib.sha1(GUARDED_SET.encode("utf-8"), usedforsecurity=False).hexdigest()


def is_noscript(exc: BaseException) -> bool:
    """Whether a command failed because the server does not have the script (RespClient's
    RespError or redis-py's NoScriptError): then it is sent whole, with EVAL."""
    return type(exc).__name__ == "NoScriptError" or str(exc).startswith("NOSCRIPT")


# (key, state, version, op_id, payload), and optionally the floor: the earliest `at` the writer
# knows for the key, as reads show timestamps (the loader's; a reader's fill has none).
Entry = tuple[str, bytes, int, str, bytes] | tuple[str, bytes, int, str, bytes, str]


def guarded_set(client: CacheClient, mode: str, ttl_ms: int, entries: Sequence[Entry]) -> int:
    """Run GUARDED_SET over entries; returns how many were written (an entry that only lowered a
    stored entry's created_at is not counted). EVALSHA first; on NOSCRIPT (a restarted or flushed
    server) EVAL, which also caches it."""
    keys = [e[0] for e in entries]
    args: list[Any] = [mode, ttl_ms]
    for entry in entries:
        args += entry[1:] if len(entry) == 6 else [*entry[1:], ""]
    try:
        return int(client.execute_command("EVALSHA", GUARDED_SET_SHA, len(keys), *keys, *args))
    except Exception as exc:  # only NOSCRIPT is handled here; the rest is re-raised
        if not is_noscript(exc):
            raise
    return int(client.execute_command("EVAL", GUARDED_SET, len(keys), *keys, *args))


# -- the pending writes ---------------------------------------------------------------------------
_LUA_HELPERS = (
    LUA_NEWER
    + """
local function fields(value)
  local a = string.find(value, "|", 1, true)
  local b = a and string.find(value, "|", a + 1, true)
  local c = b and string.find(value, "|", b + 1, true)
  local d = c and string.find(value, "|", c + 1, true)
  if not d then return nil end
  local version_text = string.sub(value, a + 1, b - 1)
  return tonumber(version_text), string.sub(value, b + 1, c - 1), string.sub(value, c + 1, d - 1),
    string.sub(value, d + 1), version_text
end
"""
)

RECORD = (
    """
-- Pending writes of one owner (chalicelib/readers/pending.py). KEYS[1]: the owner's hash.
-- ARGV[1]: TTL in ms; then per entry: field, state, version, op_id, payload.
-- An entry is written when (version, op_id) is newer than the stored one; CREATED keeps the
-- smallest version seen for the field. Versions are compared as numbers (exact below 2^53) and
-- written back as the text they came in (Lua would print a large number as 1.8e+15).
-- KEYS[2..]: the cache entries of todos a POST made with new ids (nothing can be stored for
-- them): each is set to "absent" at version 0, unless it exists (any entry is as new), for the
-- last ARGV's milliseconds, so a read by key knows nothing is stored without the database."""
    + _LUA_HELPERS
    + """
local written = 0
local last = #ARGV
if #KEYS > 1 then last = #ARGV - 1 end
for i = 2, last, 5 do
  local field, state, version_text, op_id, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local version = tonumber(version_text)
  local created = version_text
  local write = true
  local current = redis.call("HGET", KEYS[1], field)
  if current then
    local cur_version, cur_op, cur_created, cur_rest, cur_text = fields(current)
    if cur_version then
      if tonumber(cur_created) < version then created = cur_created end
      write = newer(version, op_id, cur_version, cur_op)
      if not write and version < tonumber(cur_created) then
        local a = string.find(current, "|", 1, true)
        redis.call("HSET", KEYS[1], field, string.sub(current, 1, a) .. cur_text .. "|" .. cur_op .. "|" .. version_text .. "|" .. cur_rest)
      end
    end
  end
  if write then
    redis.call("HSET", KEYS[1], field, state .. "|" .. version_text .. "|" .. op_id .. "|" .. created .. "|" .. payload)
    written = written + 1
  end
end
redis.call("PEXPIRE", KEYS[1], ARGV[1])
for k = 2, #KEYS do
  redis.call("SET", KEYS[k], "a|0||", "PX", ARGV[#ARGV], "NX")
end
return written
"""
)

DROP = (
    """
-- Remove pending entries a replica has shown (or that expired). KEYS[1]: the owner's hash;
-- ARGV: field, version, op_id triples. A field is removed only while its entry is not newer, in
-- (version, op_id) order, than that: a write recorded since, or the winner of a version tie
-- the replica does not show yet, stays.
"""
    + _LUA_HELPERS
    + """
local dropped = 0
for i = 1, #ARGV, 3 do
  local current = redis.call("HGET", KEYS[1], ARGV[i])
  if current then
    local cur_version, cur_op = fields(current)
    if cur_version == nil or not newer(cur_version, cur_op, tonumber(ARGV[i + 1]), ARGV[i + 2]) then
      dropped = dropped + redis.call("HDEL", KEYS[1], ARGV[i])
    end
  end
end
return dropped
"""
)

READ_PAIR = """
-- One round trip for a read by key: the cache entry (KEYS[1]) and the pending entry (KEYS[2], ARGV[1]).
return {redis.call("GET", KEYS[1]), redis.call("HGET", KEYS[2], ARGV[1])}
"""

_SHAS = {
    text: hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest() for text in (RECORD, DROP, READ_PAIR)
}


def run_script(client: CacheClient, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """EVALSHA, and EVAL when the server does not have the script (restarted or flushed)."""
    try:
        return client.execute_command("EVALSHA", _SHAS[script], len(keys), *keys, *args)
    except Exception as exc:
        if not is_noscript(exc):
            raise
    return client.execute_command("EVAL", script, len(keys), *keys, *args)


def pair_payload(key: str, hash_key: str, field: str) -> bytes:
    """The two commands `read_pair` sends to a RespClient (HGET, then GET), encoded: a caller that
    reads a key often keeps them (`readers/pending.py`)."""
    return encode_command(("HGET", hash_key, field)) + encode_command(("GET", key))


def read_pair(client: CacheClient, key: str, hash_key: str, field: str, payload: bytes | None = None) -> list[Any]:
    """[the cache entry `key`, the pending entry `field` of `hash_key`], as READ_PAIR answers.

    With a RespClient, the two are read in one round trip without a script: HGET, then GET, in
    one write (Redis runs no script, which costs it more than the two reads); `payload`, when
    given, is those commands as `pair_payload` encodes them. Read in that order,
    they answer what READ_PAIR answers for read-your-writes: a pending entry is dropped only after
    the cache holds a state at least as new as it (PendingWrites fills, then drops), and a cache
    entry is only ever replaced by a newer one (GUARDED_SET), so a pending entry the HGET no
    longer finds left behind a cache entry the later GET finds (or a miss, read from the
    database, as when the entry expires under READ_PAIR). Other clients (redis-py) run READ_PAIR.
    An error reply is raised, as the script's would be."""
    if type(client) is not RespClient:
        return list(run_script(client, READ_PAIR, [key, hash_key], [field]))
    pending, entry = client.pair(payload if payload is not None else pair_payload(key, hash_key, field))
    if isinstance(pending, RespError):
        raise pending
    if isinstance(entry, RespError):
        raise entry
    return [entry, pending]
