-- wrk script for the load comparison. WRK_MODE selects the scenario:
--   get  : the URL's path, GET (static request: no Lua per request)
--   post : POST of a 1 KiB body to WRK_POST_PATH (static request)
--   mix  : 9 GETs of the URL's path, then 1 POST of 1 KiB to WRK_POST_PATH, repeated
-- done() prints one machine-readable line for run.sh.
local mode = os.getenv("WRK_MODE") or "get"
local post_path = os.getenv("WRK_POST_PATH") or "/api/orders"
local body = string.rep("x", 1024)
local post_headers = { ["Content-Type"] = "application/octet-stream" }

if mode == "post" then
  wrk.method = "POST"
  wrk.path = post_path
  wrk.body = body
  wrk.headers["Content-Type"] = "application/octet-stream"
elseif mode == "mix" then
  local get_req, post_req
  local n = 0
  function init(args)
    get_req = wrk.format("GET", wrk.path)
    post_req = wrk.format("POST", post_path, post_headers, body)
  end
  function request()
    n = n + 1
    if n % 10 == 0 then
      return post_req
    end
    return get_req
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.connect, e.read, e.write, e.status, e.timeout))
end
