-- wrk script for bench/model_gw.sh: a non-streaming OpenAI chat completion.
-- Environment: BENCH_MODEL (model name in the body), BENCH_KEY (sent as a bearer token; the
-- fixture and nginx ignore it, model-gw checks it). done() prints one line that model_gw.sh parses.
local model = os.getenv("BENCH_MODEL") or "bench"
local key = os.getenv("BENCH_KEY") or "none"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
-- The fixture replies "Fixture reply to: <content>": 10 words, so 10 completion tokens.
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"one two three four five six seven"}]}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d non2xx=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
