local dir = KEYS[1]
local s = tonumber(ARGV[1])
local dm = floor(dir, s, '')
local out = {}
if not dm then return out end
local at, first = redis.call('ZRANK', dir, dm), true
while true do
  local d = redis.call('ZRANGE', dir, at, at + 7, 'WITHSCORES')
  for i = 1, #d, 2 do
    if dir_score(d[i + 1]) > s and not first then return out end
    first = false
    local base = base_of(d[i])
    local r = redis.call('ZRANGEBYSCORE', bucket_key(dir, d[i]), s - base, s - base)
    for j = 1, #r do out[#out + 1] = r[j] end
  end
  if #d < 16 then return out end
  at = at + 8
end
