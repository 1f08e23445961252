local dir = KEYS[1]
local desc = ARGV[1] == '1'
local offset, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local with_total = ARGV[4] == '1'
local max = ARGV[5] == '+inf' and math.huge or tonumber(ARGV[5])
local out = {0}
local counts = {}
if with_total or offset > 0 then
  local raw = redis.call('HGETALL', count_key(dir))
  for i = 1, #raw, 2 do counts[raw[i]] = tonumber(raw[i + 1]) end
end
local total, seen, chunk, at = 0, 0, 64, 0
while true do
  local d
  if desc then
    d = redis.call('ZREVRANGE', dir, at, at + chunk - 1, 'WITHSCORES')
  else
    d = redis.call('ZRANGE', dir, at, at + chunk - 1, 'WITHSCORES')
  end
  for i = 1, #d, 2 do
    local key = bucket_key(dir, d[i])
    local n = counts[d[i]]
    if not n then n = redis.call('ZCARD', key) end
    total = total + n
    if limit > 0 and seen + n > offset then
      local base = base_of(d[i])
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
          drop_if_empty(dir, key, d[i])
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
    if limit <= 0 and not with_total then
      out[1] = total
      return out
    end
  end
  if #d < 2 * chunk then break end
  at = at + chunk
end
out[1] = total
return out
