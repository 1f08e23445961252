local pos = 2
local out = {}
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local old = redis.call('HGETALL', key)
  local changed, existed, old_number, old_join, old_expiry = 0, 0, '', '', -1
  if #old > 0 then
    existed = 1
    old_expiry = redis.call('PEXPIRETIME', key)
    local prev, old_count, new_count, differs = {}, 0, 0, false
    for j = 1, #old, 2 do
      if old[j] ~= 'cached_at' and old[j] ~= 'updated_at' then
        prev[old[j]] = old[j + 1]
        old_count = old_count + 1
      end
    end
    for j = pos, pos + 2 * n - 1, 2 do
      local f = ARGV[j]
      if f ~= 'cached_at' and f ~= 'updated_at' then
        new_count = new_count + 1
        if prev[f] ~= ARGV[j + 1] then differs = true end
      end
    end
    if differs or old_count ~= new_count then changed = 1 end
    old_number = prev['number'] or ''
    old_join = prev['join_time'] or ''
    local piece = 2
    while prev['join_time:' .. piece] do
      old_join = old_join .. prev['join_time:' .. piece]
      piece = piece + 1
    end
    redis.call('DEL', key)
  end
  redis.call('HSET', key, unpack(ARGV, pos, pos + 2 * n - 1))
  redis.call('PEXPIREAT', key, ARGV[1])
  pos = pos + 2 * n
  out[#out + 1] = changed
  out[#out + 1] = existed
  out[#out + 1] = old_number
  out[#out + 1] = old_join
  out[#out + 1] = old_expiry
end
return out
