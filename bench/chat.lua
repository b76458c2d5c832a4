-- wrk script: one small non-streaming chat completion per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark"}],"max_tokens":16}'
