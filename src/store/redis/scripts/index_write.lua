local ttl = tonumber(ARGV[1])
local removals = tonumber(ARGV[2])
local touched, removed, pos = {}, 0, 3
for _ = 1, removals do
  removed = removed + remove(KEYS[tonumber(ARGV[pos])], tonumber(ARGV[pos + 1]), ARGV[pos + 2])
  pos = pos + 3
end
local dirs = {}
while pos <= #ARGV do
  local dir = KEYS[tonumber(ARGV[pos])]
  add(dir, tonumber(ARGV[pos + 1]), ARGV[pos + 2], touched)
  dirs[dir] = true
  pos = pos + 3
end
local function extend(key, want)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < want) then redis.call('PEXPIRE', key, want) end
end
if ttl > 0 then
  local want = {}
  for dir in pairs(dirs) do
    extend(dir, ttl)
    extend(count_key(dir), ttl)
    want[dir] = math.max(ttl, redis.call('PTTL', dir))
  end
  for key, dir in pairs(touched) do extend(key, want[dir]) end
end
return removed
