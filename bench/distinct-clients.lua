-- Every request a different X-Client header value, so a limit keyed by that header never sees the
-- same bucket twice in a row (the worst case for coalescing decisions per bucket).
init = function(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
request = function()
  return wrk.format("GET", wrk.path, { ["X-Client"] = tostring(math.random(1, 1000000000)) })
end
