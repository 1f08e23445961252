local dropped = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    dropped = dropped + redis.call('DEL', key)
  end
end
return dropped
