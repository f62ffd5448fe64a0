-- wrk script for the README figure: a plain (non-stream) OpenAI chat request.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},' ..
           '{"role":"user","content":"Say hello to the benchmark, please."}],"max_tokens":64}'
