-- The benchmark's native load generator: wrk's threads place orders and send the `sim` provider's signed
-- callbacks, so no Python stands between the load and payments. Run by harness/bench/wrk.py, which reads
-- back the ground truth each thread writes (one line per order placed, callback signed, answer received).
--
-- wrk -s load.lua URL -- MODE OUT THREADS ORDERS RATE DUPLICATES SECRET RUN_ID USERS START_AT [PAY_FILE]
--   pipeline   place ORDERS at RATE per second (from START_AT, unix seconds); pay each as its answer comes
--   orders     place ORDERS as fast as the connections allow, pay none
--   callbacks  pay the orders listed in PAY_FILE (order id, amount), every callback signed before the start
-- Ground truth lines (tab-separated) in OUT.<thread>: O order user amount channel | C order paid_at sends |
-- R order http-status result | E http-status body | L requests (sent, never answered: the thread gave up on
-- them) | D (the thread is done).
-- Orders carry the API key in CREDITED_API_KEY (environment, not argv) as `Authorization: Bearer <key>`.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } credited_timespec;
int clock_gettime(int clock, credited_timespec *ts);
const void *EVP_sha256(void);
unsigned char *HMAC(const void *md, const void *key, int key_len, const unsigned char *data, size_t n,
                    unsigned char *out, unsigned int *out_len);
]]
local crypto = ffi.load("crypto")
local now_ts = ffi.new("credited_timespec")
local mac = ffi.new("unsigned char[32]")
local mac_len = ffi.new("unsigned int[1]")

local AUTHORIZATION = "Bearer " .. (os.getenv("CREDITED_API_KEY") or "")
-- payments closes a connection whose first request has not come within servicekit's HEADERS_WITHIN_S (10 s) of its
-- opening; a request written as it closes is lost. So no connection sleeps longer than CREDITED_WRK_IDLE_MS (wrk.py:
-- half of that) before sending something, a /healthz when it has nothing else.
local IDLE_LIMIT_MS = tonumber(os.getenv("CREDITED_WRK_IDLE_MS") or "5000")
-- A request whose connection broke before its answer (a reset, a refused write) is never answered: wrk connects
-- again and asks request() for the next one. With nothing else to send, the thread waits for the rest of its
-- answers at most CREDITED_WRK_GIVE_UP_S (wrk.py passes wrk's --timeout) past the last one, then says how many it
-- gave up on: otherwise it would wait out wrk's whole -d duration, and the step's rate and CPU would be counted
-- over that wait. Idle connections wake often enough to notice.
local GIVE_UP_S = tonumber(os.getenv("CREDITED_WRK_GIVE_UP_S") or "30")
local AMOUNTS = { 100, 600, 3000, 6800, 12800, 32800, 64800 }
local CHANNELS = { "alipay", "wechat", "card", "carrier" }

local index = 0
function setup(thread)
  thread:set("thread_index", index)
  index = index + 1
end

local function now()
  ffi.C.clock_gettime(0, now_ts)
  return tonumber(now_ts.tv_sec) + tonumber(now_ts.tv_nsec) / 1e9
end

local function hmac_hex(key, data)
  crypto.HMAC(crypto.EVP_sha256(), key, #key, data, #data, mac, mac_len)
  local hex = {}
  for i = 0, 31 do
    hex[i + 1] = string.format("%02x", mac[i])
  end
  return table.concat(hex)
end

local mode, out, threads, total, rate, duplicates, secret, run_id, users, start_at, verifying
local next_order, reserved, placed_all, queue, head, tail, inflight, log, stopped, answered_at

local function say(...)
  log:write(table.concat({ ... }, "\t"), "\n")
end

local function callback(order_id, amount)
  local t = now()
  local seconds = math.floor(t)
  local paid_at = os.date("!%Y-%m-%dT%H:%M:%S", seconds) .. string.format(".%06d+00:00", math.floor((t - seconds) * 1e6))
  local body = string.format(
    '{"order_id":"%s","provider_txn_id":"wrk-%s","status":"succeeded","amount":%d,"currency":"CNY","paid_at":"%s"}',
    order_id, string.sub(order_id, -16), amount, paid_at)
  local signature = string.format("t=%d,v1=%s", seconds, hmac_hex(secret, seconds .. "." .. body))
  local sends = (math.random() < duplicates) and 2 or 1
  say("C", order_id, string.format("%.6f", t), sends)
  local headers = { ["Content-Type"] = "application/json", ["X-Signature"] = signature }
  return wrk.format("POST", "/v1/psp/sim/callbacks", headers, body), sends
end

local function push(item)
  tail = tail + 1
  queue[tail] = item
end

function init(args)
  mode, out, threads, total = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  rate, duplicates, secret, run_id = tonumber(args[5]), tonumber(args[6]), args[7], args[8]
  users, start_at = tonumber(args[9]), tonumber(args[10])
  math.randomseed(thread_index * 7919 + 17)
  log = assert(io.open(out .. "." .. thread_index, "w"))
  log:setvbuf("full")
  next_order, reserved, queue, head, tail, inflight = thread_index, thread_index, {}, 1, 0, 0
  answered_at = start_at
  -- wrk calls the first thread's request() once before it runs, to check the request; it is never sent
  verifying = thread_index == 0
  placed_all = mode == "callbacks" or next_order >= total
  if mode == "callbacks" then
    local line_no = 0
    for line in io.lines(args[11]) do
      if line_no % threads == thread_index then
        local order_id, amount = string.match(line, "^(%S+)\t(%d+)")
        push({ callback(order_id, tonumber(amount)) })
      end
      line_no = line_no + 1
    end
  end
end

local function order_request()
  local i = next_order
  next_order = next_order + threads
  placed_all = next_order >= total
  local body = string.format('{"user_id":"wrk-%s-%d","amount":%d,"currency":"CNY","channel":"%s"}', run_id,
    i % users, AMOUNTS[math.random(#AMOUNTS)], CHANNELS[math.random(#CHANNELS)])
  local headers = {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("wrk-%s-%d", run_id, i),
    ["Authorization"] = AUTHORIZATION,
  }
  return wrk.format("POST", "/v1/orders", headers, body)
end

local function due_in_ms(slot)
  if mode ~= "pipeline" or rate <= 0 then
    return 0
  end
  return (start_at + slot / rate - now()) * 1000
end

-- Each connection waiting for an order reserves its own slot of the schedule, so one connection wakes per
-- order instead of all of them at once; never a slot further ahead than IDLE_MS. A connection with nothing to
-- wait for (every slot reserved, or every order placed) sleeps: a wake must send something, and the callbacks
-- need no one waiting, as the connection that got an order's answer sends its callback next. The thread stops
-- them all when its work is done.
local IDLE_MS = math.min(IDLE_LIMIT_MS, GIVE_UP_S * 1000 / 3)

function delay()
  if head <= tail then
    return 0
  end
  if placed_all or reserved >= total then
    return IDLE_MS
  end
  local wait = due_in_ms(reserved)
  if wait > IDLE_MS then
    return IDLE_MS -- too far ahead for a connection that may not have sent anything yet: it comes back
  end
  reserved = reserved + threads
  return math.max(0, wait)
end

local function finished()
  return placed_all and head > tail and inflight == 0
end

local function given_up()
  return placed_all and head > tail and inflight > 0 and now() - answered_at > GIVE_UP_S
end

-- wrk's main thread sleeps for the whole -d duration whatever its threads do: each thread says it is done
-- with a last line, and wrk.py interrupts wrk (SIGINT, which still runs done()) once every thread has.
local function stop()
  if stopped then
    return
  end
  stopped = true
  say("D")
  log:flush()
  wrk.thread:stop()
end

-- An order whose time has come goes first (a callback must not take its slot, or orders fall behind the
-- rate), then a queued callback; a connection woken for a slot another one took sends the next order up to
-- one slot early rather than nothing.
function request()
  if verifying then
    verifying = false
    return wrk.format("GET", "/healthz")
  end
  local early = (mode == "pipeline" and rate > 0) and 1000 / rate * threads or 1
  if not placed_all and due_in_ms(next_order) <= 1 then
    inflight = inflight + 1
    return order_request()
  end
  if head <= tail then
    local item = queue[head]
    if item[2] > 1 then
      item[2] = item[2] - 1 -- the provider sends this one twice: the copy goes on another connection
    else
      queue[head] = nil
      head = head + 1
    end
    inflight = inflight + 1
    return item[1]
  end
  if not placed_all and due_in_ms(next_order) <= early then
    inflight = inflight + 1
    return order_request()
  end
  if given_up() then
    say("L", inflight)
    stop()
  elseif finished() then
    stop()
  end
  return wrk.format("GET", "/healthz")
end

function response(status, headers, body)
  if string.find(body, '"dependencies":', 1, true) then
    -- an idle connection's /healthz (servicekit.http: its status and each dependency's readiness)
    if status ~= 200 then
      say("E", status, (string.gsub(string.sub(body, 1, 200), "[\t\n]", " ")))
    end
    return
  end
  inflight = inflight - 1
  answered_at = now()
  local order_id = string.match(body, '"order_id":"([^"]+)"')
  local result = string.match(body, '"result":"([^"]+)"')
  if result ~= nil then
    say("R", order_id or "", status, result)
  elseif (status == 200 or status == 201) and order_id ~= nil then
    local user = string.match(body, '"user_id":"([^"]+)"')
    local amount = tonumber(string.match(body, '"amount":(%d+)'))
    say("O", order_id, user, amount, string.match(body, '"channel":"([^"]+)"'))
    if mode == "pipeline" then
      push({ callback(order_id, amount) })
    end
  else
    say("E", status, (string.gsub(string.sub(body, 1, 200), "[\t\n]", " ")))
  end
  if finished() then
    stop()
  end
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"duration_s":%.6f,"requests":%d,"p50_ms":%.3f,"p99_ms":%.3f,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d}\n',
    summary.duration / 1e6, summary.requests, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
