-- wrk script: replays the bench's Dovecot requests (path and body, alternating lines of a file).
local paths, bodies, n, i = {}, {}, 0, 0
function init(args)
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
  return wrk.format("POST", paths[i], { ["Content-Type"] = "application/json" }, bodies[i])
end
