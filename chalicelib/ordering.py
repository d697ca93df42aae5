"""The one ordering rule of last-writer-wins (CONTRACT sections 3 and 5).

Of two commands for one key, the one with the greater (version, op_id) wins: versions compare as
integers, and equal versions by op_id, compared character by character (canonical UUIDs are
ASCII, so byte order is character order). Every Python comparison of commands calls `newer`,
reads included: a loaded (or cached) state and the caller's pending write are compared by
`loaded_wins`, which is `newer` with the pending write as the challenger. The SQL guards
(`loader/apply.py`, `loader/mysql_fast.py`) restate it in SQL, and `LUA_NEWER` below in Lua for
the scripts of the cache and the pending writes (`readers/scripts.py`);
tests/integration/test_ordering.py checks each against `newer` on drawn pairs, and the reads
that compare a loaded state with a pending write.
"""

from __future__ import annotations

Order = tuple[int, str]  # (version, op_id)


def newer(a: Order, b: Order) -> bool:
    """True when a command ordered `a` wins over one ordered `b` (and so replaces it)."""
    return a[0] > b[0] or (a[0] == b[0] and a[1] > b[1])


def loaded_wins(loaded: Order, pending: Order) -> bool:
    """Whether a loaded (or cached) state ordered `loaded` answers over the caller's pending write
    ordered `pending`: unless the pending write is newer, exactly as the loader would decide
    between the two commands. An equal order is the pending write itself, loaded. A state whose
    op_id is not known ("", as in a cache entry a reader filled before reads carried op_ids) is
    older than any command of its version, so it never wins a tie."""
    return not newer(pending, loaded)


# newer() in Lua, for the Redis scripts of the cache and the pending writes (readers/scripts.py),
# which prepend it. Lua compares strings with strcoll (the server's locale),
# so op_ids are compared byte by byte; versions are below 2^53 and so exact as Lua numbers.
LUA_NEWER = """
local function bytes_cmp(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  if #a == #b then return 0 end
  if #a < #b then return -1 end
  return 1
end
local function newer(version, op_id, cur_version, cur_op)
  if version ~= cur_version then return version > cur_version end
  return bytes_cmp(op_id, cur_op) > 0
end
"""
