-- wrk script for bench/http: POST /payments with an Idempotency-Key.
--   wrk ... -s request.lua URL -- fresh RUN_ID   a key of its own per request
--   wrk ... -s request.lua URL -- replay KEY     the same (already completed) key every time
-- At the end it prints one JSON line: requests, seconds, errors, p50 and p99 in microseconds.
local threads = {}
local n = 0

function setup(thread)
  n = n + 1
  thread:set("tid", n)
  table.insert(threads, thread)
end

local mode, arg, counter

function init(args)
  mode = args[1] or "fresh"
  arg = args[2] or "run"
  counter = 0
end

function request()
  local key
  if mode == "replay" then
    key = arg
  else
    counter = counter + 1
    key = arg .. "-" .. tid .. "-" .. counter
  end
  return wrk.format("POST", "/payments", {
    ["Idempotency-Key"] = key,
    ["Content-Type"] = "application/json",
  }, '{"amount":5,"currency":"eur"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.6f,"errors":%d,"non_2xx":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
