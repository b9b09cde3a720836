-- wrk script: replays the bench's Dovecot requests (path and body, alternating lines of a file).
local paths, bodies, n, i, gap = {}, {}, 0, 0, nil
function init(args)
  -- Optional rate: each of the connections waits connections/rate seconds between requests.
  if args[2] and args[3] then gap = 1000 * tonumber(args[3]) / tonumber(args[2]) end
  local f = assert(io.open(args[1], "r"))
  while true do
    local p = f:read("*l")
    local b = f:read("*l")
    if not p or not b then break end
    n = n + 1
    paths[n] = p
    bodies[n] = b
  end
  f:close()
  i = math.random(n)
end
function request()
  i = i % n + 1
  return wrk.format("POST", paths[i], { ["Content-Type"] = "application/json", ["X-API-Key"] = "bench-dovecot-key-0123456789abcdef" }, bodies[i])
end
function delay()
  if gap then return gap * (0.5 + math.random()) end
  return 0
end
