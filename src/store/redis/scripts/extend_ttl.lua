local ttl = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ttl) then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 0
