-- wrk script for bench/model_gw.sh: a streamed OpenAI chat completion ("stream": true).
-- The fixture answers with 12 chat.completion.chunk events (role, 10 words, finish) and
-- data: [DONE], sent one write at a time; wrk reads the whole chunked response as one request.
-- Environment: BENCH_MODEL, BENCH_KEY, as in model_gw_chat.lua.
local model = os.getenv("BENCH_MODEL") or "bench"
local key = os.getenv("BENCH_KEY") or "none"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"model":"' .. model .. '","stream":true,"messages":[{"role":"user","content":"one two three four five six seven"}]}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d non2xx=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
