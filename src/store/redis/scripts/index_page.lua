local dir = KEYS[1]
local desc = ARGV[1] == '1'
local offset, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local with_total = ARGV[4] == '1'
local max = ARGV[5] == '+inf' and math.huge or tonumber(ARGV[5])
local counts = counts_of(dir)
local buckets = redis.call('ZCARD', dir)
if #counts ~= buckets then
  local c = {}
  for i, dm in ipairs(redis.call('ZRANGE', dir, 0, -1)) do
    c[i] = string.char(redis.call('ZCARD', bucket_key(dir, dm)))
  end
  counts = table.concat(c)
  redis.call('SET', count_key(dir), counts)
  local left = redis.call('PTTL', dir)
  if left > 0 then redis.call('PEXPIRE', count_key(dir), left) end
end
local total = 0
if with_total then
  for i = 1, #counts do total = total + string.byte(counts, i) end
end
local soonest = ''
if #KEYS > 1 then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #first > 0 then
    local r = redis.call('ZRANGE', bucket_key(KEYS[2], first[1]), 0, 0, 'WITHSCORES')
    soonest = '0'
    if #r > 0 then soonest = fmt(base_of(first[1]) + tonumber(r[2])) end
  end
end
local out = {total, soonest}
local seen, i = 0, 0
while i < buckets and limit > 0 do
  local rank = i
  if desc then rank = buckets - 1 - i end
  local n = string.byte(counts, rank + 1)
  if seen + n > offset then
    local dm = redis.call('ZRANGE', dir, rank, rank)[1]
    local key, base = bucket_key(dir, dm), base_of(dm)
    local from = math.max(offset - seen, 0)
    local to = math.min(n - 1, from + limit - 1)
    local r
    if desc then
      r = redis.call('ZREVRANGE', key, from, to, 'WITHSCORES')
    elseif max < math.huge then
      r = redis.call('ZRANGEBYSCORE', key, '-inf', max - base, 'WITHSCORES', 'LIMIT', from, to - from + 1)
    else
      r = redis.call('ZRANGE', key, from, to, 'WITHSCORES')
    end
    if #r < 2 * (to - from + 1) then
      if max < math.huge then
        limit = 0
      else
        count_set(dir, dm, redis.call('ZCARD', key))
      end
    end
    for j = 1, #r, 2 do
      local s = base + tonumber(r[j + 1])
      if s > max then
        limit = 0
        break
      end
      out[#out + 1] = r[j]
      out[#out + 1] = fmt(s)
      limit = limit - 1
    end
    offset = seen + n
  end
  seen = seen + n
  i = i + 1
end
return out
