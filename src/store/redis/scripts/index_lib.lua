local MAX = 127

local function fmt(x)
  return string.format('%.0f', x)
end

local function lex_le(a, b)
  if a == b then return true end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function bucket_key(dir, dm)
  return string.sub(dir, 1, -4) .. dm
end

local function count_key(dir)
  return string.sub(dir, 1, -4) .. 'count'
end

local function counts_of(dir)
  return redis.call('GET', count_key(dir)) or ''
end

local function count_set(dir, dm, n)
  redis.call('SETRANGE', count_key(dir), redis.call('ZRANK', dir, dm), string.char(n))
end

local function count_insert(dir, dm, n)
  local c, r = counts_of(dir), redis.call('ZRANK', dir, dm)
  redis.call('SET', count_key(dir), string.sub(c, 1, r) .. string.char(n) .. string.sub(c, r + 1), 'KEEPTTL')
end

local function count_delete(dir, dm)
  local c, r = counts_of(dir), redis.call('ZRANK', dir, dm)
  redis.call('SET', count_key(dir), string.sub(c, 1, r) .. string.sub(c, r + 2), 'KEEPTTL')
end

local function low_of(dm)
  return string.sub(dm, 1, string.find(dm, '!', 1, true) - 1)
end

local function base_of(dm)
  return tonumber(string.sub(dm, string.find(dm, '!', 1, true) + 1))
end

local function dir_score(raw)
  if raw == '-inf' then return -math.huge end
  return tonumber(raw)
end

local function floor(dir, s, m)
  local off = 0
  while true do
    local r = redis.call('ZREVRANGEBYSCORE', dir, s, '-inf', 'WITHSCORES', 'LIMIT', off, 8)
    for i = 1, #r, 2 do
      if dir_score(r[i + 1]) < s or lex_le(low_of(r[i]), m) then return r[i], base_of(r[i]) end
    end
    if #r < 16 then break end
    off = off + 8
  end
  local first = redis.call('ZRANGE', dir, 0, 0)
  if #first == 0 then return nil end
  return first[1], base_of(first[1])
end

local function split(dir, key, base, s, m, touched)
  local all = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local n = #all / 2
  local last_abs = base + tonumber(all[#all])
  if s > last_abs or (s == last_abs and not lex_le(m, all[#all - 1])) then
    local dm = m .. '!' .. fmt(s)
    redis.call('ZADD', dir, s, dm)
    count_insert(dir, dm, 0)
    return
  end
  local p = math.floor(n / 2)
  local low = all[2 * p + 1]
  local low_abs = base + tonumber(all[2 * p + 2])
  local dm = low .. '!' .. fmt(low_abs)
  local new_key = bucket_key(dir, dm)
  local args = {}
  for r = p, n - 1 do
    args[#args + 1] = base + tonumber(all[2 * r + 2]) - low_abs
    args[#args + 1] = all[2 * r + 1]
  end
  redis.call('ZADD', new_key, unpack(args))
  redis.call('ZREMRANGEBYRANK', key, p, -1)
  redis.call('ZADD', dir, low_abs, dm)
  count_insert(dir, dm, n - p)
  count_set(dir, string.sub(key, #dir - 2), p)
  local left = redis.call('PTTL', key)
  if left > 0 then redis.call('PEXPIRE', new_key, left) end
  touched[new_key] = dir
end

local function add(dir, s, m, touched)
  local dm, base = floor(dir, s, m)
  if not dm then
    dm, base = '!' .. fmt(s), s
    redis.call('ZADD', dir, '-inf', dm)
    count_insert(dir, dm, 0)
  end
  local key = bucket_key(dir, dm)
  if redis.call('ZCARD', key) >= MAX and not redis.call('ZSCORE', key, m) then
    split(dir, key, base, s, m, touched)
    dm, base = floor(dir, s, m)
    key = bucket_key(dir, dm)
  end
  if redis.call('ZADD', key, s - base, m) == 1 then
    count_set(dir, dm, redis.call('ZCARD', key))
  end
  touched[key] = dir
end

local function drop_if_empty(dir, key, dm)
  local left = redis.call('ZCARD', key)
  if left > 0 then
    count_set(dir, dm, left)
    return
  end
  count_delete(dir, dm)
  redis.call('DEL', key)
  local first = redis.call('ZRANK', dir, dm) == 0
  redis.call('ZREM', dir, dm)
  local next = redis.call('ZRANGE', dir, 0, 0)
  if first and #next > 0 then redis.call('ZADD', dir, '-inf', next[1]) end
end

local function remove(dir, s, m)
  local dm, base = floor(dir, s, m)
  if not dm then return 0 end
  local key = bucket_key(dir, dm)
  local current = redis.call('ZSCORE', key, m)
  if not current or tonumber(current) ~= s - base then return 0 end
  redis.call('ZREM', key, m)
  drop_if_empty(dir, key, dm)
  return 1
end
