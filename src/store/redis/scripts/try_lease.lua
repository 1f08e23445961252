local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {'granted'}
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'granted'}
end
if string.sub(v, 1, 5) == 'gone:' then return {'gone', v} end
return {'taken'}
