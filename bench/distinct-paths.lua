-- Every request a different path (/PREFIX/<random id>), so no two requests share a decision input.
-- The prefix comes from the URL wrk is given.
local prefix
init = function(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
request = function()
  prefix = prefix or wrk.path:match("^(/[^/]+/)")
  return wrk.format("GET", prefix .. math.random(1, 1000000000))
end
