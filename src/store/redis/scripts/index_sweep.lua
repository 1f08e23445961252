local exact = tonumber(ARGV[1])
local removed, pos = 0, 2
for _ = 1, exact do
  removed = removed + remove(KEYS[tonumber(ARGV[pos])], tonumber(ARGV[pos + 1]), ARGV[pos + 2])
  pos = pos + 3
end
local doomed, any = {}, false
while pos <= #ARGV do
  doomed[ARGV[pos]] = {ARGV[pos + 1], ARGV[pos + 2]}
  any = true
  pos = pos + 3
end
if not any then return removed end
for k = 1, 2 do
  local dir = KEYS[k]
  for _, dm in ipairs(redis.call('ZRANGE', dir, 0, -1)) do
    local key, base = bucket_key(dir, dm), base_of(dm)
    local r = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    local gone = {}
    for j = 1, #r, 2 do
      local d = doomed[r[j]]
      if d and (d[k] == '' or tonumber(d[k]) ~= base + tonumber(r[j + 1])) then
        gone[#gone + 1] = r[j]
      end
    end
    if #gone > 0 then
      redis.call('ZREM', key, unpack(gone))
      removed = removed + #gone
      drop_if_empty(dir, key, dm)
    end
  end
end
return removed
