-- wrk script of the ingest benchmark: POSTs Evolution 2.3 `messages.upsert` webhooks.
--
--   wrk -t2 -c32 -d15s --latency --timeout 10s -s bench/webhook.lua URL -- INSTANCE TAG PHONES OUTDIR [BASE]
--
-- Every request carries a UNIQUE data.key.id ("W" .. TAG .. thread id .. per-thread counter) and comes from
-- one of PHONES lead numbers starting at BASE (a pool, so conversation actors and contacts are reused, not
-- one per request); PHONES = 0 gives every request a number of its own (BASE + thread * 100000 + counter):
-- each one a new lead.
-- Each thread appends the X-Luminai-Message-Id header of every 200 to OUTDIR/ids-<thread>.txt, so the
-- benchmark can check in PostgreSQL that exactly the 200-answered messages were stored; done() writes
-- OUTDIR/summary.json (requests, errors, status codes, latency percentiles in microseconds).

local threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

local template = '{"event":"messages.upsert","instance":"%s","data":{"key":{"remoteJid":"%s@s.whatsapp.net",'
   .. '"fromMe":false,"id":"%s"},"pushName":"Bench Lead","status":"DELIVERY_ACK",'
   .. '"message":{"conversation":"Oi, quero saber mais sobre o produto (%d)"},"messageType":"conversation",'
   .. '"messageTimestamp":1761046839,"source":"android"},'
   .. '"destination":"http://127.0.0.1/api/webhooks/whatsapp/evolution","date_time":"2025-10-21T11:40:39.512Z",'
   .. '"sender":"5511912345678@s.whatsapp.net","server_url":"http://127.0.0.1:8080","apikey":null}'

function init(args)
   instance = args[1] or "bench-instance"
   tag = args[2] or "T"
   phones = tonumber(args[3] or "500")
   outdir = args[4]
   base = tonumber(args[5] or "0")
   counter = 0
   ok200 = 0
   dup = 0
   codes = {}
   if outdir then
      idfile = io.open(outdir .. "/ids-" .. tid .. ".txt", "w")
      idfile:setvbuf("line")
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["X-Webhook-Token"] = "bench-webhook-token"  -- the agents' secret (bench/_common.py)
end

function request()
   counter = counter + 1
   local idx
   if phones == 0 then
      idx = base + tid * 100000 + counter
   else
      idx = base + (tid * 257 + counter * 31) % phones
   end
   local phone = string.format("551198%07d", idx)
   local mid = string.format("W%s%02d%09d", tag, tid, counter)
   local body = string.format(template, instance, phone, mid, counter)
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   local key = tostring(status)
   codes[key] = (codes[key] or 0) + 1
   if status == 200 then
      ok200 = ok200 + 1
      local mid = headers["x-luminai-message-id"] or headers["X-Luminai-Message-Id"]
      if mid and idfile then
         idfile:write(mid, "\n")
      end
      if string.find(body, '"duplicate"', 1, true) then
         dup = dup + 1
      end
   end
end

function done(summary, latency, requests)
   local ok, dups, sent = 0, 0, 0
   local all_codes = {}
   for _, thread in ipairs(threads) do
      ok = ok + (thread:get("ok200") or 0)
      dups = dups + (thread:get("dup") or 0)
      sent = sent + (thread:get("counter") or 0)
      local c = thread:get("codes") or {}
      for k, v in pairs(c) do
         all_codes[k] = (all_codes[k] or 0) + v
      end
   end
   local parts = {}
   for k, v in pairs(all_codes) do
      table.insert(parts, string.format('"%s":%d', k, v))
   end
   local e = summary.errors
   local out = string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,"requests_generated":%d,"ok200":%d,"duplicates":%d,'
         .. '"codes":{%s},"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}',
      summary.requests, summary.duration, summary.bytes, sent, ok, dups, table.concat(parts, ","),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9))
   local dir = threads[1] and threads[1]:get("outdir")
   if dir then
      local f = io.open(dir .. "/summary.json", "w")
      f:write(out, "\n")
      f:close()
   end
   io.write(out, "\n")
end
