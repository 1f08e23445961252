local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local current = redis.call('HGET', KEYS[1], ARGV[2 + i * 3])
  if current == false then current = '' end
  if current ~= ARGV[3 + i * 3] then return 0 end
end
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], ARGV[2 + i * 3], ARGV[4 + i * 3])
end
for j = 2 + n * 3, #ARGV do
  redis.call('LPUSH', KEYS[2], ARGV[j])
end
return 1
